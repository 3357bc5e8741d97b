"""The committed AsyncAPI document matches the models, and is valid AsyncAPI 3.0."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from worker.contract import asyncapi
from worker.contract.asyncapi import asyncapi_document, render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.json"
SPECS_PACKAGE = "@asyncapi/specs@6.11.1"


@pytest.fixture(scope="session")
def asyncapi_schema() -> dict[str, Any]:
    """The official AsyncAPI 3.0.0 JSON schema, from the npm registry, cached."""
    cache = ROOT / ".cache" / "asyncapi-specs"
    schema_file = cache / "package" / "schemas" / "3.0.0-without-$id.json"
    if not schema_file.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot fetch the AsyncAPI 3.0 JSON schema")
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "pack", SPECS_PACKAGE, "--silent"], cwd=cache, check=True, capture_output=True
        )
        (tarball,) = cache.glob("asyncapi-specs-*.tgz")
        with tarfile.open(tarball) as archive:
            archive.extractall(cache, filter="data")
    loaded: dict[str, Any] = json.loads(schema_file.read_text())
    return loaded


def test_the_committed_document_matches_the_models() -> None:
    assert COMMITTED.read_text() == render(), (
        "docs/asyncapi.json is out of date: python -m worker.contract.asyncapi > docs/asyncapi.json"
    )


def test_a_model_change_makes_the_check_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    original = asyncapi.asyncapi_document

    def drifted() -> dict[str, Any]:
        document = original()
        document["components"]["schemas"]["Prompt"]["properties"]["new_field"] = {"type": "string"}
        return document

    monkeypatch.setattr(asyncapi, "asyncapi_document", drifted)
    assert COMMITTED.read_text() != asyncapi.render()


def test_the_document_is_valid_asyncapi_3(asyncapi_schema: dict[str, Any]) -> None:
    jsonschema.validate(asyncapi_document(), asyncapi_schema)


def test_an_invalid_document_is_rejected_by_the_schema(asyncapi_schema: dict[str, Any]) -> None:
    document = asyncapi_document()
    document["operations"]["receivePrompt"]["action"] = "consume"  # only send / receive
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, asyncapi_schema)


def test_every_event_type_is_documented() -> None:
    messages = asyncapi_document()["components"]["messages"]
    names = {m["name"] for m in messages.values()}
    assert {
        "llm.stream.started.v1",
        "llm.stream.chunk.v1",
        "llm.stream.usage.v1",
        "llm.stream.completed.v1",
        "llm.stream.failed.v1",
        "llm.stream.cancelled.v1",
    } <= names


def _prompt_validator() -> jsonschema.protocols.Validator:
    schemas = asyncapi_document()["components"]["schemas"]
    schema = {**schemas["Prompt"], "components": {"schemas": schemas}}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", ["scrub_pii", "scrubPII"])
def test_a_publisher_checking_the_schema_may_send_either_scrub_name(name: str) -> None:
    prompt: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], name: True}
    _prompt_validator().validate(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        {"messages": [{"role": "user", "content": "hi"}], "scrub_pii": True, "scrubPII": True},
        {"messages": [{"role": "user", "content": "hi"}], "scrub_pii": "yes"},
        {"messages": [{"role": "user", "content": "hi"}] * 257},
        {
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {str(n): "v" for n in range(17)},
        },
    ],
)
def test_the_schema_states_the_contract_s_rules_and_limits(prompt: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _prompt_validator().validate(prompt)


def test_the_schema_states_the_default_size_limit() -> None:
    assert asyncapi_document()["components"]["schemas"]["Prompt"]["x-max-bytes"] == 262144
