"""The Dapr resources load in the real daprd (the pinned release, tools/daprd).

Three sets: components/local with components/config/sidecar.yaml (what `make run`
uses), components/redis against a real Redis, and the Dapr resources of the rendered
k8s/overlays/redis (plus the kafka overlay's declarative Subscription) made standalone:
Redis at the test's address, the `kubernetes` secret store replaced by local env
secrets. Each time daprd must log every component as loaded, log no error, and report
the components and HTTP endpoints through its metadata API. The Kafka pub/sub itself is
not loaded: our daprd build has no Kafka component and no broker runs here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.net import free_port, http_status, wait_until
from testbed.process import daprd_binary
from testbed.reap import terminate
from testbed.redis import RedisServer, start_redis
from tests.k8s.manifests import REPO_ROOT, render

pytestmark = [pytest.mark.dapr, pytest.mark.slow]

APP_ID = "llm-stream-worker"


@dataclass
class Loaded:
    log: str
    metadata: dict[str, Any]

    @property
    def components(self) -> dict[str, str]:
        return {c["name"]: c["type"] for c in self.metadata.get("components", [])}

    @property
    def http_endpoints(self) -> set[str]:
        return {e["name"] for e in self.metadata.get("httpEndpoints", [])}


def run_daprd(
    resources: Path, config: Path | None, workdir: Path, env: Mapping[str, str] = {}
) -> Loaded:
    """Start daprd on the resources (no app), read its metadata, stop it, return its log."""
    http = free_port()
    args = [
        daprd_binary(),
        "--app-id", APP_ID,
        "--resources-path", str(resources),
        "--dapr-http-port", str(http),
        "--dapr-grpc-port", str(free_port()),
        "--dapr-internal-grpc-port", str(free_port()),
        "--metrics-port", str(free_port()),
        "--dapr-listen-addresses", "127.0.0.1",
        "--log-level", "info",
    ]  # fmt: skip
    if config is not None:
        args += ["--config", str(config)]
    log_path = workdir / "daprd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), **env},
        )
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or http_status(f"http://127.0.0.1:{http}/v1.0/healthz") == 204
            ),
            timeout=60,
            what="daprd to report healthy",
            on_timeout=lambda: log_path.read_text(errors="replace"),
        )
        assert process.poll() is None, f"daprd exited:\n{log_path.read_text(errors='replace')}"
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1.0/metadata", timeout=5) as r:
            metadata = json.load(r)
    finally:
        terminate(process, 30)
    return Loaded(log=log_path.read_text(errors="replace"), metadata=metadata)


def _messages(log: str, level: str) -> list[str]:
    """Lines of `level` up to the stop signal: what loading and running logged.

    Shutdown is left out: with the overlay's OTLP endpoint unreachable (as here) daprd
    waits out its graceful-shutdown period and logs a fatal "forcing shutdown".
    """
    before_stop = log.split("Received signal", 1)[0]
    return [line for line in before_stop.splitlines() if f"level={level}" in line]


def assert_loaded(loaded: Loaded, resources: Path) -> None:
    """Every Component under `resources` loaded, nothing failed, resiliency applied."""
    documents = [
        doc
        for path in sorted(resources.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    components = {
        d["metadata"]["name"]: d["spec"]["type"] for d in documents if d["kind"] == "Component"
    }
    assert components
    for name, kind in components.items():
        assert f'msg="Component loaded: {name} ({kind}/v1)"' in loaded.log, loaded.log
    assert loaded.components == components
    endpoints = {d["metadata"]["name"] for d in documents if d["kind"] == "HTTPEndpoint"}
    assert loaded.http_endpoints == endpoints
    for doc in documents:
        if doc["kind"] == "Resiliency":
            assert f"Loading Resiliency configuration: {doc['metadata']['name']}" in loaded.log
    assert not re.search(r"(?i)failed to init|error (processing|loading|initializing)", loaded.log)
    assert _messages(loaded.log, "error") == []
    assert _messages(loaded.log, "fatal") == []


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def test_local_components_load(tmp_path: Path) -> None:
    resources = REPO_ROOT / "components" / "local"
    loaded = run_daprd(resources, REPO_ROOT / "components" / "config" / "sidecar.yaml", tmp_path)
    assert_loaded(loaded, resources)


def _retarget(text: str, redis: RedisServer) -> str:
    return text.replace("localhost:6379", redis.address)


def test_redis_components_load(tmp_path: Path, redis: RedisServer) -> None:
    resources = tmp_path / "components"
    resources.mkdir()
    for path in (REPO_ROOT / "components" / "redis").glob("*.yaml"):
        (resources / path.name).write_text(_retarget(path.read_text(), redis))
    loaded = run_daprd(
        resources,
        REPO_ROOT / "components" / "config" / "sidecar.yaml",
        tmp_path,
        env={"openai-api-key": "Bearer sk-test"},
    )
    assert_loaded(loaded, resources)


LOCAL_SECRETS = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "localsecrets"},
    "spec": {"type": "secretstores.local.env", "version": "v1", "metadata": []},
}


def _standalone(doc: dict[str, Any], redis: RedisServer, secrets: dict[str, str]) -> None:
    """In place: Kubernetes-only references made local (Redis address, secrets)."""
    if doc.get("auth", {}).get("secretStore") == "kubernetes":
        doc["auth"]["secretStore"] = "localsecrets"
    spec = doc["spec"]
    items = spec.get("metadata", []) if doc["kind"] == "Component" else spec.get("headers", [])
    kept = []
    for item in items:
        if item["name"] == "redisHost":
            item["value"] = redis.address
        if item["name"] == "redisPassword":
            continue  # the test's Redis has no password
        ref = item.get("secretKeyRef")
        if ref is not None:
            # local.env serves one value per variable: secret name and key become one.
            variable = f"{ref['name']}-{ref['key']}"
            item["secretKeyRef"] = {"name": variable, "key": variable}
            secrets[variable] = "Bearer sk-test" if ref["key"] == "authorization" else "sk-test"
        kept.append(item)
    if doc["kind"] == "Component":
        spec["metadata"] = kept
        if kept and any("secretKeyRef" in item for item in kept):
            doc["auth"] = {"secretStore": "localsecrets"}


SIDECAR_NAME_RESOLUTION = yaml.safe_load(
    (REPO_ROOT / "components" / "config" / "sidecar.yaml").read_text()
)["spec"]["nameResolution"]


def test_the_redis_overlay_dapr_resources_load(tmp_path: Path, redis: RedisServer) -> None:
    # The worker's sidecar loads what is scoped to it; pubsub-clients is the clients'
    # (and its "{podName}" needs a pod).
    docs = [
        d
        for d in render(REPO_ROOT / "k8s" / "overlays" / "redis")
        if d["apiVersion"].startswith("dapr.io/") and APP_ID in d.get("scopes", [APP_ID])
    ]
    docs += [
        d for d in render(REPO_ROOT / "k8s" / "overlays" / "kafka") if d["kind"] == "Subscription"
    ]
    secrets: dict[str, str] = {}
    resources = tmp_path / "resources"
    resources.mkdir()
    config = tmp_path / "config.yaml"
    for doc in docs:
        if doc["kind"] == "Configuration":
            # Kubernetes' default name resolver; standalone daprd would pick mdns, which
            # our build leaves out: use the one components/config/sidecar.yaml uses.
            doc["spec"]["nameResolution"] = SIDECAR_NAME_RESOLUTION
            config.write_text(yaml.safe_dump(doc))
            continue
        _standalone(doc, redis, secrets)
        name = f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        (resources / name).write_text(yaml.safe_dump(doc))
    (resources / "component-localsecrets.yaml").write_text(yaml.safe_dump(LOCAL_SECRETS))
    assert config.exists()
    loaded = run_daprd(resources, config, tmp_path, env=secrets)
    assert_loaded(loaded, resources)
    assert loaded.components["openai-conversation"] == "conversation.openai"
    assert loaded.components["pubsub"] == "pubsub.redis"
    (subscription,) = loaded.metadata["subscriptions"]
    assert subscription["type"] == "DECLARATIVE"
    assert (subscription["pubsubname"], subscription["topic"]) == ("pubsub", "prompts")
    assert subscription["deadLetterTopic"] == "prompts-deadletter"


def test_daprd_is_at_hand() -> None:
    binary = daprd_binary()
    assert shutil.which(binary) or Path(binary).is_file()
