"""A downstream service: reassembles the worker's reply streams and prints each reply.

Any Python service that consumes the response topic needs the same few steps: take
events in whatever order the broker delivers them, drop duplicates, order them by
`seq`, throw away an attempt the worker restarted, and act on the terminal event.
`worker.client.consumer.Reassembler` does all of that; this service only prints.

Two ways to receive the events (see examples/README.md):

    # A Dapr app: the sidecar delivers to our gRPC app callback on APP_PORT.
    python examples/downstream_service.py
    # No app port: a streaming subscription on the sidecar at DAPR_GRPC_PORT.
    python examples/downstream_service.py --streaming

Next to `make run`, `make consume` runs it as its own Dapr app with `--follow`: each
reply's text is printed chunk by chunk as it arrives, then the whole reply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TextIO

from worker.client.consumer import (
    Event,
    Finished,
    Gap,
    Reassembler,
    Started,
    Superseded,
    Text,
)
from worker.client.errors import MalformedEvent
from worker.contract.envelopes import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.transport.dapr import AppServer, Subscription
from worker.transport.sidecar import SidecarClient

log = logging.getLogger("downstream")


class ReplyPrinter:
    """Feeds every event to one `Reassembler`; prints what a person would want to see."""

    def __init__(self, out: TextIO, *, max_held: int | None = None, follow: bool = False) -> None:
        self._assembler = Reassembler(max_held=max_held)
        self._out = out
        self._follow = follow

    def handle(self, event_id: str, event_type: str, data: bytes) -> None:
        try:
            payload = json.loads(data)
            outputs = self._assembler.feed(Event(type=event_type, data=payload, id=event_id))
        except (ValueError, MalformedEvent) as exc:
            # Not one of the worker's events: skip it, the stream is not ours to break.
            log.warning("ignoring event %s: %s", event_id, exc)
            return
        for output in outputs:
            match output:
                case Started(context_id=context_id, attempt=attempt) if self._follow:
                    self._print(
                        output.request_id, f"started: context {context_id}, attempt {attempt}"
                    )
                case Text(index=index, text=text) if self._follow:
                    # In order: the reassembler releases chunk n only after chunk n - 1.
                    self._print(output.request_id, f"chunk {index}: {text!r}")
                case Superseded(attempt=attempt, by_attempt=by, discarded_text=text):
                    # The worker took the turn over; a UI would clear the partial reply here.
                    self._print(
                        output.request_id,
                        f"attempt {attempt} superseded by {by}: {len(text)} chars discarded",
                    )
                case Gap(missing=missing):
                    self._print(output.request_id, f"gave up waiting for events {missing}")
                case Finished():
                    self._finished(output)

    def _finished(self, done: Finished) -> None:
        if done.status == "completed":
            usage = f"{done.usage.total_tokens} tokens ({done.usage.source})" if done.usage else "?"
            self._print(done.request_id, f"context {done.context_id}, {usage}:\n{done.text}")
        elif done.failure is not None:
            failure = done.failure
            self._print(done.request_id, f"failed: {failure.code}: {failure.message}")
        else:
            self._print(done.request_id, f"cancelled: {done.cancel_reason}")

    def _print(self, request_id: str, line: str) -> None:
        print(f"[{request_id}] {line}", file=self._out, flush=True)


async def serve_app(
    port: int, printer: ReplyPrinter, pubsub: str, topic: str, stop: asyncio.Event
) -> None:
    """The app callback (the worker's own server): subscribes to `topic`, takes deliveries."""

    async def deliver(message: InboundMessage) -> Outcome:
        printer.handle(message.id, message.type, message.data)
        # SUCCESS even for events we skipped: redelivering them cannot make them readable.
        return Outcome.SUCCESS

    server = AppServer(
        host="127.0.0.1",
        port=port,
        subscriptions=[Subscription(pubsub, topic)],
        handler=deliver,
    )
    await server.start()
    log.info("app callback on 127.0.0.1:%d; start its sidecar with --app-port %d", port, port)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=2)


async def stream(address: str, printer: ReplyPrinter, pubsub: str, topic: str) -> None:
    async with (
        SidecarClient(address) as sidecar,
        sidecar.subscribe(pubsub, topic) as messages,
    ):
        log.info("streaming subscription to %s/%s on %s", pubsub, topic, address)
        async for message in messages:
            printer.handle(message.id, message.type, message.data)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streaming", action="store_true", help="use a streaming subscription (no app port)"
    )
    parser.add_argument("--app-port", type=int, default=int(os.environ.get("APP_PORT", "50052")))
    parser.add_argument(
        "--address", default=f"127.0.0.1:{os.environ.get('DAPR_GRPC_PORT', '50001')}"
    )
    parser.add_argument("--pubsub", default="pubsub")
    parser.add_argument("--topic", default="responses")
    parser.add_argument(
        "--max-held",
        type=int,
        default=None,
        help="events held behind a missing one before it is skipped (default: wait)",
    )
    parser.add_argument(
        "--follow", action="store_true", help="print each reply's chunks as they arrive too"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    printer = ReplyPrinter(sys.stdout, max_held=args.max_held, follow=args.follow)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.streaming:
        reader = asyncio.create_task(stream(args.address, printer, args.pubsub, args.topic))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({reader, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopped
        if reader.done() and reader.exception() is not None:
            error = reader.exception()
            # One line for what the sidecar said, not a traceback.
            log.error("%s", error)
            raise SystemExit(1) from error
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    else:
        await serve_app(args.app_port, printer, args.pubsub, args.topic, stop)


if __name__ == "__main__":
    asyncio.run(main())
