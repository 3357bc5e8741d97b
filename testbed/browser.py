"""Headless Chromium from Debian, driven over the Chrome DevTools Protocol (a websocket).

No driver and no new dependency: aiohttp's websocket client speaks CDP well enough to
open a page and read what its script left in `window`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

__all__ = ["Page", "chromium_binary", "open_page"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str | None:
    """$CHROMIUM, else Debian's `chromium` on PATH; None when there is none."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return shutil.which(configured)
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab, through its own CDP websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"CDP {method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def navigate(self, url: str) -> None:
        """Open `url` and return once its load event fired (its scripts have run)."""
        await self.call("Page.enable")
        message_id = next(self._ids)
        navigate = {"id": message_id, "method": "Page.navigate", "params": {"url": url}}
        await self._ws.send_json(navigate)
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == message_id and "error" in message:
                raise RuntimeError(f"CDP Page.navigate: {message['error']}")
            if message.get("method") == "Page.loadEventFired":
                return

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = await self.call(
            "Runtime.evaluate", expression=f"JSON.stringify({expression})", returnByValue=True
        )
        value = result.get("result", {}).get("value")
        return None if value is None else json.loads(value)

    async def wait_for(self, condition: str) -> None:
        """Until a JavaScript condition holds, checked in the page every 50 ms."""
        await self.call(
            "Runtime.evaluate",
            expression=(
                "new Promise(done => { const check = () => { try { if (" + condition + ") "
                "return done(true); } catch (e) {} setTimeout(check, 50); }; check(); })"
            ),
            awaitPromise=True,
        )


async def _devtools_port(process: asyncio.subprocess.Process) -> int:
    assert process.stderr is not None
    seen = []
    async for raw in process.stderr:
        line = raw.decode(errors="replace")
        seen.append(line)
        match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if match:
            return int(match.group(1))
    raise RuntimeError("chromium exited without a DevTools port:\n" + "".join(seen[-20:]))


@asynccontextmanager
async def open_page(url: str) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile) with one tab at `url`."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("no chromium binary")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *_FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                port = await _devtools_port(process)
            # Drain the rest of its log, so that a chatty browser never blocks on a pipe.
            drain = asyncio.create_task(_drain(process))
            async with aiohttp.ClientSession() as http:
                async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
                    target = await response.json(content_type=None)
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.navigate(url)
                    yield page
            drain.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    async for _ in process.stderr:
        pass
