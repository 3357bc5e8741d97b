"""The naive-loop reference: the streaming handler written the obvious way.

The Dapr SDK's stock threaded `App` (a gRPC server on a pool of 10 threads), a blocking
`requests` call to the OpenAI-compatible SSE endpoint per prompt, and one
`DaprClient.publish_event` per token, without coalescing. One `DaprClient` per prompt
(the docs' `with DaprClient() as d:` pattern). No history, leases or de-duplication:
it does less than the worker, and is only here to be timed against it.

    APP_PORT=... DAPR_GRPC_PORT=... DAPR_HTTP_PORT=... NAIVE_BASE_URL=http://.../v1 \
        python -m bench.naive_app
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from dapr.clients import DaprClient
from dapr.ext.grpc import App

BASE_URL = os.environ.get("NAIVE_BASE_URL", "http://127.0.0.1:8000/v1")
PROMPT_TOPIC = os.environ.get("NAIVE_PROMPT_TOPIC", "naive-prompts")
RESPONSE_TOPIC = os.environ.get("NAIVE_RESPONSE_TOPIC", "responses")

app = App()


def _publish(client: DaprClient, payload: dict[str, Any]) -> None:
    client.publish_event(
        pubsub_name="pubsub",
        topic_name=RESPONSE_TOPIC,
        data=json.dumps(payload),
        data_content_type="application/json",
    )


@app.subscribe(pubsub_name="pubsub", topic=PROMPT_TOPIC)  # type: ignore[untyped-decorator]
def on_prompt(event: Any) -> None:
    prompt = json.loads(event.Data())
    request_id = prompt["request_id"]
    body = {"model": "m", "messages": prompt["messages"], "stream": True}
    seq = 0
    with (
        DaprClient() as client,
        requests.post(
            f"{BASE_URL}/chat/completions", json=body, stream=True, timeout=60
        ) as response,
    ):
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: "):
                continue
            payload = line[len(b"data: ") :]
            if payload == b"[DONE]":
                break
            for choice in json.loads(payload).get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    seq += 1
                    _publish(
                        client,
                        {"kind": "chunk", "request_id": request_id, "seq": seq, "text": text},
                    )
        _publish(client, {"kind": "completed", "request_id": request_id, "seq": seq + 1})


if __name__ == "__main__":
    app.run(int(os.environ["APP_PORT"]))
