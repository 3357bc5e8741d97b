"""`python -m worker`: read settings, handle signals, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from worker.main import main
from worker.settings import Settings

__all__ = ["cli"]


async def _serve(settings: Settings) -> None:
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)
    await main(settings, shutdown)


def cli() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        # Fail fast, before touching the sidecar, with every bad value named.
        print(f"llm-stream-worker: invalid configuration\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    cli()
