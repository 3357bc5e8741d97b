"""`python -m worker`: read settings, handle signals, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker.main import main
from worker.observability.logs import configure_logging
from worker.settings import Settings

__all__ = ["cli", "describe_settings_error", "loop_factory"]


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


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop asked for; None is asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "llm-stream-worker: WORKER_EVENT_LOOP=uvloop, but uvloop is not installed"
            ) from None
        return None
    return uvloop.new_event_loop


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
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(_serve(settings))


if __name__ == "__main__":
    cli()
