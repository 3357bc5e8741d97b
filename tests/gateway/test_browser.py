"""A real browser: headless Chromium loads the gateway's page, whose EventSource loses its
connection mid-reply; the page must end with the whole text, nothing lost or repeated.

The browser reconnects by itself and sends Last-Event-ID, as browsers do; the gateway
replicas sit behind one address (a TCP proxy standing in for the Kubernetes Service).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest

from testbed.browser import Page, chromium_binary, open_page
from testbed.tcp_proxy import ServiceProxy
from tests.gateway.conftest import MakeGateway, MakeStack

pytestmark = pytest.mark.dapr


async def _until(page: Page, condition: str, *, timeout: float = 60) -> Any:
    """Wait until a JavaScript condition holds in the page; the page's state then."""
    async with asyncio.timeout(timeout):
        await page.wait_for(condition)
    return await page.evaluate("window.gatewayState")


@pytest.mark.parametrize("fault", ["connection_dropped", "replica_killed"])
async def test_an_eventsource_cut_mid_reply_ends_with_the_whole_text(
    make_stack: MakeStack, make_gateway: MakeGateway, fault: str
) -> None:
    if chromium_binary() is None:
        pytest.skip(
            "no headless Chromium ($CHROMIUM, or `chromium` on PATH; Debian: apt-get install "
            "chromium, which scripts/ensure-chromium.sh tries): the browser test cannot run"
        )
    await make_stack(worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.05"})
    first = await make_gateway(GATEWAY_SSE_RETRY_MS=200)
    second = await make_gateway(GATEWAY_SSE_RETRY_MS=200)
    service = ServiceProxy([first.port, second.port])
    await service.start()
    text = " ".join(f"word{i}" for i in range(60))
    try:
        async with open_page(f"{service.url}/?prompt={quote(text)}") as page:
            await _until(page, "window.gatewayState && window.gatewayState.ids.length >= 5")
            if fault == "replica_killed":
                first.kill()  # the replica serving the page and its stream dies
            else:
                service.cut()
            state = await _until(page, "window.gatewayState.done || window.gatewayState.error")
    finally:
        await service.stop()

    assert state["error"] is None
    assert state["done"] is True
    assert state["opens"] >= 2, "the EventSource never reconnected: nothing was cut"
    assert state["restarts"] == 0
    assert state["text"] == text
    assert len(state["ids"]) == len(set(state["ids"])), "an event reached the page twice"
