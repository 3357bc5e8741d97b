"""`python -m worker`: read settings, handle signals, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker.main import main
from worker.observability.logs import configure_logging
from worker.settings import Settings

__all__ = ["cli", "describe_settings_error"]


async def _serve(settings: Settings) -> None:
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)
    await main(settings, shutdown)


def describe_settings_error(error: ValidationError | SettingsError) -> str:
    """Which settings are wrong and why, never their values: a value may hold an API key."""
    if isinstance(error, SettingsError):
        # pydantic-settings names the field and the source; the value stays out of it.
        return f"  {str(error).split(' from source ')[0]}"
    return "\n".join(
        f"  {'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    )


def cli() -> None:
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        # Fail fast, before touching the sidecar, with every bad setting named.
        print(
            f"llm-stream-worker: invalid configuration\n{describe_settings_error(exc)}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    cli()
