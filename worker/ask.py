"""`python -m worker.ask "Tell me a story"`: publish a prompt, print the reply as it streams.

A small command for trying the worker; it talks to the worker's own sidecar (so it works
with the in-memory pub/sub of `make run`) through a streaming subscription.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

from worker.pipeline.inbound import InboundMessage
from worker.transport.dapr import SidecarClient

__all__ = ["ask", "main"]


async def ask(
    text: str,
    *,
    address: str,
    pubsub: str = "pubsub",
    prompt_topic: str = "prompts",
    response_topic: str = "responses",
    context_id: str | None = None,
    llm_component: str | None = None,
    raw: bool = False,
    wait_seconds: float = 60,
) -> int:
    request_id = f"ask-{uuid.uuid4().hex}"
    prompt: dict[str, object] = {
        "messages": [{"role": "user", "content": text}],
        "request_id": request_id,
    }
    if context_id:
        prompt["context_id"] = context_id
    if llm_component:
        prompt["llm_component"] = llm_component
    async with (
        SidecarClient(address) as sidecar,
        sidecar.subscribe(pubsub, response_topic) as events,
    ):
        await sidecar.publish(
            pubsub=pubsub,
            topic=prompt_topic,
            data=json.dumps(prompt).encode(),
            content_type="application/json",
            metadata={},
        )
        async with asyncio.timeout(wait_seconds):
            async for message in events:
                event = json.loads(message.data)
                if _own(event, request_id):
                    done = _show(message, event, raw)
                    if done is not None:
                        return done
    return 1


def _own(event: object, request_id: str) -> bool:
    return isinstance(event, dict) and event.get("request_id") == request_id


def _show(message: InboundMessage, data: dict[str, Any], raw: bool) -> int | None:
    """Print one event; the exit code once the turn is over, else None."""
    if raw:
        print(json.dumps({"id": message.id, "type": message.type, "data": data}), flush=True)
    match message.type.removeprefix("llm.stream.").removesuffix(".v1"):
        case "started" if not raw:
            print(f"[context {data['context_id']}, {data['llm_component']}]", file=sys.stderr)
        case "chunk" if not raw:
            print(data["text"], end="", flush=True)
        case "usage" if not raw:
            print(
                f"\n[usage: {data['prompt_tokens']} prompt + {data['completion_tokens']} "
                f"completion = {data['total_tokens']} tokens, {data['source']}]",
                file=sys.stderr,
            )
        case "completed" | "cancelled":
            return 0
        case "failed":
            print(f"failed: {data['code']}: {data['message']}", file=sys.stderr)
            return 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.ask", description=__doc__)
    parser.add_argument("text")
    parser.add_argument("--context-id")
    parser.add_argument("--llm-component")
    parser.add_argument("--json", action="store_true", help="print the raw events")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    address = f"127.0.0.1:{os.environ.get('DAPR_GRPC_PORT', '50001')}"
    try:
        code = asyncio.run(
            ask(
                args.text,
                address=address,
                context_id=args.context_id,
                llm_component=args.llm_component,
                raw=args.json,
                wait_seconds=args.timeout,
            )
        )
    except TimeoutError:
        print(f"\nno reply within {args.timeout:.0f}s: is `make run` running?", file=sys.stderr)
        code = 1
    except Exception as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
