"""`python -m worker`: read settings, handle signals, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError

from worker.main import main
from worker.observability.logs import configure_logging
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
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    cli()
