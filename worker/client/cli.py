"""`llm-stream ask "Tell me a story"`: print a reply as it streams, then its timings.

The reply goes to stdout; progress, timings, token usage and errors to stderr, so
`llm-stream ask ... > reply.txt` keeps only the reply. Exit status: 0 done, 1 the
request failed (worker, sidecar, timeout), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TextIO

from worker.client.aio import AsyncClient
from worker.client.errors import ClientError, GenerationFailed, InvalidRequest
from worker.client.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, GenerateOptions
from worker.client.ports import Transport
from worker.client.progress import Progress
from worker.client.prompt import build_prompt
from worker.client.stream import AsyncReplyStream
from worker.client.types import CompletionUsage

__all__ = ["main", "run"]

PROG = "llm-stream"


@dataclass
class _Timings:
    start: float
    first_chunk: float | None = None
    end: float | None = None

    def chunk(self) -> None:
        if self.first_chunk is None:
            self.first_chunk = time.monotonic()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Talk to the LLM streaming worker through Dapr."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    ask = commands.add_parser(
        "ask",
        help="send a prompt and print the reply as it streams",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    ask.add_argument("text", help='the user message ("-" reads it from stdin)')
    ask.add_argument("--context-id", help="continue this conversation")
    ask.add_argument("--no-stream", action="store_true", help="print the reply when complete")
    ask.add_argument(
        "--json", action="store_true", help="print the raw response events, one JSON per line"
    )
    ask.add_argument("--llm-component", help="LLM backend (default: the worker's)")
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--max-tokens", type=int)
    ask.add_argument("--scrub-pii", action="store_true", help="scrub PII from prompt and reply")
    ask.add_argument(
        "-v", "--verbose", action="store_true", help="also log what the client works around"
    )
    ask.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each next event (default: %(default)s)",
    )
    dapr = ask.add_argument_group("Dapr")
    dapr.add_argument(
        "--address", help="sidecar gRPC address (default: 127.0.0.1:$DAPR_GRPC_PORT, or :50001)"
    )
    dapr.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds to wait for the sidecar (default: %(default)s)",
    )
    dapr.add_argument("--pubsub", default="pubsub")
    dapr.add_argument("--prompt-topic", default="prompts")
    dapr.add_argument("--response-topic", default="responses")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `llm-stream` command; returns the exit status."""
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


async def run(
    argv: Sequence[str], out: TextIO, err: TextIO, *, transport: Transport | None = None
) -> int:
    """`main` on given streams; `transport` replaces the sidecar (tests pass a fake)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(err)
        print(f"{PROG}: error: a command is required (try: {PROG} ask 'Hello')", file=err)
        return 2
    if args.text == "-":
        args.text = sys.stdin.read()
    # The client logs what it works around (a lost `started`, say); a person asking a
    # question wants that only when asking for it.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    logger = logging.getLogger("worker.client")
    level = logger.level
    logger.setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    logger.addHandler(handler)
    try:
        return await _ask(args, out, err, transport)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _ask(
    args: argparse.Namespace, out: TextIO, err: TextIO, transport: Transport | None
) -> int:
    options: GenerateOptions = {
        "context_id": args.context_id,
        "temperature": args.temperature,
        "scrubPII": args.scrub_pii,
        "llm_component": args.llm_component,
        "max_tokens": args.max_tokens,
    }
    try:
        # A usage error should not wait for a sidecar first.
        build_prompt(args.text, **options)
    except InvalidRequest as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    client = AsyncClient(
        args.address,
        pubsub=args.pubsub,
        prompt_topic=args.prompt_topic,
        response_topic=args.response_topic,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        transport=transport,
    )
    try:
        async with (
            Progress(err, f"connecting to the Dapr sidecar at {client.address}") as wait,
            client,
        ):
            wait.label = "waiting for the reply"
            return await _run(client, args, options, out, err, wait)
    except InvalidRequest as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except GenerationFailed as exc:
        retry = " (retryable)" if exc.retryable else ""
        print(f"{PROG}: failed: {exc.code}: {exc.message}{retry}", file=err)
        return 1
    except ClientError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 1


async def _run(
    client: AsyncClient,
    args: argparse.Namespace,
    options: GenerateOptions,
    out: TextIO,
    err: TextIO,
    wait: Progress,
) -> int:
    timings = _Timings(time.monotonic())
    if args.no_stream:
        reply = await client.generate(args.text, stream=False, **options)
        timings.end = time.monotonic()
        wait.stop()
        if args.json:
            out.write(json.dumps(asdict(reply)) + "\n")
        else:
            out.write(reply.choices[0].message.content + "\n")
        _report(err, reply.context_id, timings, reply.usage)
        return 0
    stream = await client.generate(args.text, stream=True, **options)
    async with stream:
        if args.json:
            code = await _print_events(stream, out, err, wait, timings)
        else:
            await _print_text(stream, out, err, wait, timings)
            code = 0
    timings.end = time.monotonic()
    _report(err, stream.context_id, timings, stream.usage)
    return code


async def _print_text(
    stream: AsyncReplyStream, out: TextIO, err: TextIO, wait: Progress, timings: _Timings
) -> None:
    printed = False
    try:
        async for event in stream:
            if event["type"] == "context_id" and event.get("restarted") and printed:
                out.write("\n")
                out.flush()
                err.write(f"[{PROG}: the worker restarted this reply; it starts over below]\n")
            elif event["type"] == "content" and event["data"]:
                if not printed:
                    wait.stop()
                    timings.chunk()
                out.write(event["data"])
                out.flush()
                printed = True
    finally:
        wait.stop()
        if printed:
            out.write("\n")
            out.flush()


async def _print_events(
    stream: AsyncReplyStream, out: TextIO, err: TextIO, wait: Progress, timings: _Timings
) -> int:
    async for event in stream.events():
        wait.stop()
        if event.type.endswith(".chunk.v1"):
            timings.chunk()
        out.write(json.dumps({"id": event.id, "type": event.type, "data": event.data}) + "\n")
        out.flush()
    finished = stream.finished
    if finished is not None and finished.failure is not None:
        failure = finished.failure
        print(f"{PROG}: failed: {failure.code}: {failure.message}", file=err)
        return 1
    if finished is not None and finished.status == "cancelled":
        print(f"{PROG}: cancelled: {finished.cancel_reason}", file=err)
        return 1
    return 0


def _report(
    err: TextIO, context_id: str | None, timings: _Timings, usage: CompletionUsage | None
) -> None:
    parts = [f"context {context_id}"]
    if timings.first_chunk is not None:
        parts.append(f"first chunk {timings.first_chunk - timings.start:.2f} s")
    if timings.end is not None:
        parts.append(f"total {timings.end - timings.start:.2f} s")
    if usage is not None:
        parts.append(
            f"tokens {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
            f" = {usage.total_tokens} ({usage.source})"
        )
    err.write(f"[{' | '.join(parts)}]\n")
    err.flush()


if __name__ == "__main__":
    sys.exit(main())
