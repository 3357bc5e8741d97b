"""The gateway's manifests (k8s/gateway): valid, and agreeing with the gateway's settings."""

from __future__ import annotations

from typing import Any

import pytest

from llm_stream_gateway.settings import Settings
from tests.k8s.manifests import REPO_ROOT, render, validate

pytestmark = pytest.mark.slow

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render(REPO_ROOT / "k8s" / "gateway")


def _one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _components(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Component"}


def _settings(deployment: Doc) -> Settings:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    with pytest.MonkeyPatch.context() as patch:
        for item in container["env"]:
            patch.setenv(item["name"], item["value"])
        return Settings()


def test_every_document_is_valid(docs: list[Doc]) -> None:
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    for doc in docs:
        validate(doc)
    assert kinds == [
        "Component/gateway-pubsub",
        "Component/gateway-statestore",
        "Deployment/llm-stream-gateway",
        "PodDisruptionBudget/llm-stream-gateway",
        "Service/llm-stream-gateway",
    ]


def test_the_sidecar_and_the_gateway_agree(docs: list[Doc]) -> None:
    deployment = _one(docs, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    settings = _settings(deployment)
    assert annotations["dapr.io/app-id"] == "llm-stream-gateway"
    assert annotations["dapr.io/app-protocol"] == "http"
    assert int(annotations["dapr.io/app-port"]) == settings.callback_port
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["llm-stream-gateway"]
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    components = _components(docs)
    assert settings.pubsub in components
    assert settings.state_store in components
    for component in components.values():
        assert component["scopes"] == ["llm-stream-gateway"]


def test_every_replica_has_a_consumer_group_of_its_own(docs: list[Doc]) -> None:
    deployment = _one(docs, "Deployment")
    pubsub = _components(docs)[_settings(deployment).pubsub]
    metadata = {m["name"]: m.get("value") for m in pubsub["spec"]["metadata"]}
    assert metadata["consumerID"] == "{podName}"


def test_the_service_exposes_the_public_port_only(docs: list[Doc]) -> None:
    service = _one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"] == {"app": "llm-stream-gateway"}
