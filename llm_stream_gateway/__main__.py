"""`llm-stream-gateway` (or `python -m llm_stream_gateway`): serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web
from pydantic import ValidationError

from llm_stream_gateway.app import Gateway, callback_app, public_app
from llm_stream_gateway.settings import Settings
from llm_stream_gateway.sidecar import Sidecar

__all__ = ["main", "serve"]

log = logging.getLogger("llm_stream_gateway")


async def serve(settings: Settings, shutdown: asyncio.Event) -> None:
    async with Sidecar(settings) as sidecar:
        gateway = Gateway(settings, sidecar)
        runners = [
            (web.AppRunner(public_app(gateway), shutdown_timeout=2), settings.host, settings.port),
            (
                # No access log: a line per delivered event would cost more than the event.
                web.AppRunner(callback_app(gateway), shutdown_timeout=2, access_log=None),
                settings.callback_host,
                settings.callback_port,
            ),
        ]
        try:
            for runner, host, port in runners:
                await runner.setup()
                await web.TCPSite(runner, host, port).start()
            log.info(
                "gateway listening on %s:%d, sidecar events on %s:%d",
                settings.host,
                settings.port,
                settings.callback_host,
                settings.callback_port,
            )
            await shutdown.wait()
        finally:
            # Open streams are closed: browsers reconnect, with Last-Event-ID, elsewhere.
            for runner, _, _ in reversed(runners):
                await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings()
    except ValidationError as exc:
        detail = "\n".join(
            f"  {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        print(f"llm-stream-gateway: invalid configuration:\n{detail}", file=sys.stderr)
        sys.exit(2)

    async def run() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, shutdown.set)
        await serve(settings, shutdown)

    asyncio.run(run())


if __name__ == "__main__":
    main()
