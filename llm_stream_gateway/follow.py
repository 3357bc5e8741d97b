"""Follow one reply from wherever it is: the stored events first, then the live ones.

The listener is registered before the store is read, so an event is either already
stored or still to come live: never neither. Both paths may bring the same event; the
client's `Reassembler` puts them in `seq` order and drops duplicates. When nothing
arrives live for a poll interval, the store is read again: the safety net for an event
this replica's subscription has not delivered (yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from llm_stream_gateway.errors import GatewayTimeout
from llm_stream_gateway.hub import Hub
from llm_stream_gateway.replay import EventLog
from worker.client.consumer import Event, Finished, Output, Reassembler, Superseded

__all__ = ["follow", "position"]


def position(output: Output) -> tuple[int, int] | None:
    """(attempt, seq) of the event behind an output; None for outputs of no one event."""
    event = getattr(output, "event", None)
    if not isinstance(event, Event):
        return None
    return int(event.data["attempt"]), int(event.data["seq"])


async def follow(
    request_id: str,
    *,
    log: EventLog,
    hub: Hub,
    poll_interval: float,
    first_event_timeout: float,
    idle_timeout: float,
) -> AsyncGenerator[Output, None]:
    """The reply's outputs in order, from its latest attempt's start; ends at `Finished`."""
    assembler = Reassembler()
    loop = asyncio.get_running_loop()
    with hub.listen(request_id) as inbox:
        attempt = await log.latest_attempt(request_id)
        next_seq = 1
        started = False
        last_progress = loop.time()
        pending, more = await log.read(request_id, attempt, next_seq)
        while True:
            while not inbox.empty():
                pending.append(inbox.get_nowait())
            progressed = False
            for event in pending:
                for output in assembler.feed(event):
                    progressed = True
                    if isinstance(output, Superseded):
                        attempt, next_seq = output.by_attempt, 1
                        continue
                    where = position(output)
                    if where is not None:
                        attempt, next_seq = where[0], where[1] + 1
                        started = True
                    yield output
                    if isinstance(output, Finished):
                        return
            pending = []
            now = loop.time()
            if progressed:
                last_progress = now
            if more:
                # A long reply being replayed: the next batch now, not after a poll.
                pending, more = await log.read(request_id, attempt, next_seq)
                continue
            limit = idle_timeout if started else first_event_timeout
            if now - last_progress >= limit:
                what = "event" if started else "`started` event"
                raise GatewayTimeout(
                    f"no {what} of stream {request_id} within {limit:g} s; it may still "
                    f"finish: GET /v1/streams/{request_id} re-attaches"
                )
            try:
                async with asyncio.timeout(min(poll_interval, limit - (now - last_progress))):
                    pending.append(await inbox.get())
            except TimeoutError:
                pending, more = await log.read(request_id, attempt, next_seq)
