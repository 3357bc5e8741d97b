"""The AsyncAPI 3.0 document of the worker's topics, generated from the contract's models.

    python -m worker.contract.asyncapi > docs/asyncapi.json     # regenerate
    python -m worker.contract.asyncapi --check docs/asyncapi.json

The committed document and the models must agree; a test checks it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from worker import __version__
from worker.contract.events import EVENT_MODELS, ResponseEvent
from worker.contract.prompt import CancelRequest, Prompt

__all__ = ["asyncapi_document"]

_REF = "#/components/schemas/{model}"


def _envelope(event: type[ResponseEvent]) -> dict[str, Any]:
    """The structured CloudEvent around one event type's data."""
    return {
        "type": "object",
        "required": [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "partitionkey",
            "sequence",
            "datacontenttype",
            "data",
        ],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {
                "type": "string",
                "description": "<request_id>:<attempt>:<seq>, the same on a republish",
            },
            "source": {"type": "string", "examples": ["/llm-stream-worker"]},
            "type": {"const": event.type.value},
            "subject": {"type": "string", "description": "the context id"},
            "partitionkey": {"type": "string", "description": "the context id"},
            "sequence": {
                "type": "string",
                "pattern": "^[0-9]{10}$",
                "description": "seq, zero-padded: string order is numeric order",
            },
            "datacontenttype": {"const": "application/json"},
            "traceparent": {"type": "string", "description": "the prompt's trace, continued"},
            "traceid": {
                "type": "string",
                "description": "Dapr's older name for traceparent, the same value",
            },
            "tracestate": {
                "type": "string",
                "description": "the W3C tracestate that goes with traceparent, when there is one",
            },
            "data": {"$ref": _REF.format(model=event.__name__)},
        },
    }


def _accept_field_names(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A field with an alias is accepted under both names (`scrub_pii` and `scrubPII`).

    The generated schema knows only the alias; with `additionalProperties: false` a
    publisher that checks it could not send the contract's own name.
    """
    properties: dict[str, Any] = schema["properties"]
    for name, field in model.model_fields.items():
        if field.alias and field.alias != name and field.alias in properties:
            properties[name] = {**properties[field.alias], "title": name}
            schema.setdefault("not", {"anyOf": []})["anyOf"].append(
                {"required": [name, field.alias]}
            )


def asyncapi_document() -> dict[str, Any]:
    models: list[type[Any]] = [Prompt, CancelRequest, *EVENT_MODELS]
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template=_REF
    )
    schemas: dict[str, Any] = dict(sorted(definitions["$defs"].items()))
    _accept_field_names(schemas["Prompt"], Prompt)
    event_messages = {
        event.__name__: {
            "name": event.type.value,
            "title": event.type.value,
            "contentType": "application/cloudevents+json",
            "payload": _envelope(event),
        }
        for event in EVENT_MODELS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "llm-stream-worker",
            "version": __version__,
            "description": (
                "A Dapr pub/sub worker that streams LLM replies as ordered CloudEvents. "
                "Topic and component names are the defaults; all are configurable. "
                "The prose contract is docs/contract.md."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "prompts": {
                "address": "prompts",
                "description": "Prompts from any Dapr app (plain JSON; Dapr wraps it).",
                "messages": {"Prompt": {"$ref": "#/components/messages/Prompt"}},
            },
            "responses": {
                "address": "responses",
                "description": (
                    "Response events, published with metadata partitionKey=<context_id>. "
                    "Per request and attempt: started, chunk*, usage, then one terminal."
                ),
                "messages": {
                    name: {"$ref": f"#/components/messages/{name}"} for name in event_messages
                },
            },
            "cancellations": {
                "address": "cancellations",
                "description": "Cancel a request, or every turn of a context.",
                "messages": {"CancelRequest": {"$ref": "#/components/messages/CancelRequest"}},
            },
            "promptsDeadletter": {
                "address": "prompts-deadletter",
                "description": "Prompts that can never be answered (invalid, unknown component).",
                "messages": {"Prompt": {"$ref": "#/components/messages/Prompt"}},
            },
        },
        "operations": {
            "receivePrompt": {"action": "receive", "channel": {"$ref": "#/channels/prompts"}},
            "sendResponseEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/responses"},
            },
            "receiveCancellation": {
                "action": "receive",
                "channel": {"$ref": "#/channels/cancellations"},
            },
            "sendDeadLetter": {
                "action": "send",
                "channel": {"$ref": "#/channels/promptsDeadletter"},
                "description": "Done by the Dapr sidecar when the worker answers DROP.",
            },
        },
        "components": {
            "schemas": schemas,
            "messages": {
                "Prompt": {
                    "name": "prompt",
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(model="Prompt")},
                },
                "CancelRequest": {
                    "name": "cancel",
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(model="CancelRequest")},
                },
                **event_messages,
            },
        },
    }


def render() -> str:
    return json.dumps(asyncapi_document(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", type=Path, help="fail if this file differs from the models")
    args = parser.parse_args()
    if args.check is None:
        sys.stdout.write(render())
        return
    if args.check.read_text() != render():
        sys.exit(f"{args.check} is out of date: python -m worker.contract.asyncapi > {args.check}")


if __name__ == "__main__":
    main()
