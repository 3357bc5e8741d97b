"""`llm-stream-gateway`: the worker's replies over HTTP, for browsers and OpenAI clients.

OpenAI-compatible `POST /v1/chat/completions` (SSE or whole), `GET /v1/streams/{id}` to
re-attach on any replica (Last-Event-ID, `starting_after`), `POST /v1/streams/{id}/cancel`.
It talks to Dapr through its own sidecar's HTTP API and imports only the worker's
contract and client building blocks, nothing of its runtime.
"""

from llm_stream_gateway.app import Gateway, callback_app, public_app
from llm_stream_gateway.settings import Settings

__all__ = ["Gateway", "Settings", "callback_app", "public_app"]
