"""Show on stderr that a long wait is still a wait, not a hang."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self, TextIO

__all__ = ["Progress"]

_FRAMES = "|/-\\"


class Progress:
    """A spinner on a terminal; elsewhere (a log, a pipe) one line after `after` seconds.

    `stop()` before writing anything else to the terminal: the spinner's line is
    where the reply will appear.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        after: float = 2.0,
        interval: float = 0.1,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self._stream = stream
        self._after = after
        self._interval = interval
        self._tty = stream.isatty() if tty is None else tty
        self._task: asyncio.Task[None] | None = None
        self._drawn = False

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._show())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def stop(self) -> None:
        """Stop and clear the spinner now (the task is suspended, so it cannot draw again)."""
        if self._task is not None:
            self._task.cancel()
        if self._drawn:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._drawn = False

    async def _show(self) -> None:
        start = time.monotonic()
        if not self._tty:
            await asyncio.sleep(self._after)
            self._stream.write(f"llm-stream: {self.label}...\n")
            self._stream.flush()
            return
        # A short grace, so that fast replies do not flicker.
        await asyncio.sleep(min(self._after, 0.3))
        frame = 0
        while True:
            elapsed = time.monotonic() - start
            self._stream.write(f"\r{_FRAMES[frame % len(_FRAMES)]} {self.label} ({elapsed:.0f} s)")
            self._stream.flush()
            self._drawn = True
            frame += 1
            await asyncio.sleep(self._interval)
