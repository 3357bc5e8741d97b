"""The Kubernetes manifests: every overlay renders, every document is valid against the
schema of its kind, and the settings that must agree with each other do.

Rendering uses kustomize's Go API (tools/kustomize), built on first use into .cache/.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.brokers import KafkaBroker
from testbed.kafka import KafkaServer
from tests.k8s.manifests import (
    OVERLAYS,
    REPO_ROOT,
    ManifestError,
    check_keda,
    check_podmonitor,
    dapr_module_dir,
    render,
    validate,
    validate_dapr,
    validate_kubernetes,
)
from worker.settings import Settings

pytestmark = pytest.mark.slow

Doc = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    name: str = request.param
    return name, render(REPO_ROOT / "k8s" / "overlays" / name)


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _meta(component: Doc) -> dict[str, Any]:
    return {item["name"]: item for item in component["spec"]["metadata"]}


def _env(deployment: Doc) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _settings(deployment: Doc) -> Settings:
    """The worker's settings as the Deployment's env makes them."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _env(deployment).items():
            patch.setenv(key, value)
        return Settings()


# --- every document is valid --------------------------------------------------------


def test_every_rendered_document_is_valid_against_its_schema(
    overlay: tuple[str, list[Doc]],
) -> None:
    name, docs = overlay
    checked = {f"{d['kind']}/{d['metadata']['name']}": validate(d) for d in docs}
    assert "kubernetes" in checked.values()
    assert "dapr" in checked.values()
    assert len(checked) == len(docs), f"{name}: duplicate documents"


def test_overlays_ship_the_expected_kinds(overlay: tuple[str, list[Doc]]) -> None:
    name, docs = overlay
    kinds = sorted(f"{d['apiVersion']} {d['kind']}" for d in docs)
    common = [
        "apps/v1 Deployment",
        "dapr.io/v1alpha1 Component",  # pubsub
        "dapr.io/v1alpha1 Component",  # pubsub-clients
        "dapr.io/v1alpha1 Component",  # statestore
        "dapr.io/v1alpha1 Component",  # conversation
        "dapr.io/v1alpha1 Configuration",
        "dapr.io/v1alpha1 HTTPEndpoint",
        "dapr.io/v1alpha1 Resiliency",
        "policy/v1 PodDisruptionBudget",
        "monitoring.coreos.com/v1 PodMonitor",
    ]
    extra = {
        "redis": ["keda.sh/v1alpha1 ScaledObject", "keda.sh/v1alpha1 TriggerAuthentication"],
        "kafka": [
            "autoscaling/v2 HorizontalPodAutoscaler",
            "dapr.io/v2alpha1 Subscription",
            # pubsub-prompts-1 and -2: more Kafka consumers of prompts in each pod
            "dapr.io/v1alpha1 Component",
            "dapr.io/v1alpha1 Component",
        ],
    }[name]
    assert kinds == sorted(common + extra)


# --- validation rejects broken manifests ----------------------------------------------


def _kustomization(tmp_path: Path, manifest: str) -> Path:
    (tmp_path / "broken.yaml").write_text(textwrap.dedent(manifest))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - broken.yaml\n"
    )
    return tmp_path


BROKEN_DEPLOYMENT = """\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: broken
    spec:
      selector:
        matchLabels: {app: broken}
      template:
        metadata:
          labels: {app: broken}
        spec:
          terminationGracePeriodSecond: 60
          containers:
            - name: worker
              image: llm-stream-worker:0.1.0
"""

BROKEN_COMPONENT = """\
    apiVersion: dapr.io/v1alpha1
    kind: Component
    metadata:
      name: pubsub
    spec:
      type: pubsub.redis
      version: 1
      metadata:
        - name: redisHost
          value: localhost:6379
"""


def test_a_misspelled_deployment_field_fails_kubernetes_validation(tmp_path: Path) -> None:
    (doc,) = render(_kustomization(tmp_path, BROKEN_DEPLOYMENT))
    with pytest.raises(ManifestError, match="terminationGracePeriodSecond"):
        validate(doc)


def test_a_wrong_type_in_a_deployment_fails_kubernetes_validation() -> None:
    doc = _one(render(REPO_ROOT / "k8s" / "overlays" / "redis"), "Deployment")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(ManifestError, match=r"spec\.replicas: 'two' is not of type 'integer'"):
        validate_kubernetes(doc)


def test_a_wrong_type_in_a_dapr_component_fails_crd_validation(tmp_path: Path) -> None:
    (doc,) = render(_kustomization(tmp_path, BROKEN_COMPONENT))
    with pytest.raises(ManifestError, match=r"spec\.version: 1 is not of type 'string'"):
        validate(doc)


def test_a_misspelled_dapr_field_fails_crd_validation() -> None:
    docs = render(REPO_ROOT / "k8s" / "overlays" / "redis")
    resiliency = _one(docs, "Resiliency")
    resiliency["spec"]["policies"]["retries"]["redeliver"]["maxRetry"] = -1
    with pytest.raises(ManifestError, match="maxRetry"):
        validate_dapr(resiliency)
    component = _one(docs, "Component", "pubsub")
    del component["spec"]["type"]
    with pytest.raises(ManifestError, match="'type' is a required property"):
        validate_dapr(component)


def test_an_unserved_dapr_version_fails() -> None:
    doc = {"apiVersion": "dapr.io/v9", "kind": "Component", "metadata": {"name": "x"}}
    with pytest.raises(ManifestError, match="no Dapr CRD serves"):
        validate(doc)


def test_a_broken_scaled_object_fails_the_structural_keda_check() -> None:
    docs = render(REPO_ROOT / "k8s" / "overlays" / "redis")
    scaled = _one(docs, "ScaledObject")
    del scaled["spec"]["triggers"][0]["metadata"]["stream"]
    scaled["spec"]["maxReplicaCount"] = "20"
    scaled["spec"]["maxReplicas"] = 20
    with pytest.raises(ManifestError) as caught:
        check_keda(scaled)
    message = str(caught.value)
    assert "metadata.stream is required" in message
    assert "maxReplicaCount must be an integer" in message
    assert "spec.maxReplicas: unknown field" in message


def test_a_broken_pod_monitor_fails_the_structural_check() -> None:
    monitor = _one(render(REPO_ROOT / "k8s" / "overlays" / "redis"), "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["targetPort"] = 9464
    del monitor["spec"]["podMetricsEndpoints"][1]["port"]
    monitor["spec"]["selector"] = {}
    with pytest.raises(ManifestError) as caught:
        check_podmonitor(monitor)
    message = str(caught.value)
    assert "podMetricsEndpoints[0].targetPort: unknown field" in message
    assert "podMetricsEndpoints[1]: port (name) or portNumber is required" in message
    assert "spec.selector needs matchLabels or matchExpressions" in message


def test_kustomize_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(ManifestError, match=r"missing\.yaml"):
        render(tmp_path)


# --- the settings that must agree -----------------------------------------------------


def test_dapr_annotations(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployment = _one(docs, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    configuration = _one(docs, "Configuration")
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == "llm-stream-worker"
    assert annotations["dapr.io/app-port"] == "50051"
    assert annotations["dapr.io/app-protocol"] == "grpc"
    assert annotations["dapr.io/config"] == configuration["metadata"]["name"]
    assert annotations["dapr.io/enable-app-health-check"] == "true"
    assert annotations["dapr.io/log-as-json"] == "true"
    assert annotations["dapr.io/enable-metrics"] == "true"
    assert "dapr.io/metrics-port" in annotations
    assert "dapr.io/app-max-concurrency" not in annotations
    settings = _settings(deployment)
    assert settings.app_id == annotations["dapr.io/app-id"]
    assert str(settings.app_port) == annotations["dapr.io/app-port"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == settings.app_port
    assert ports["metrics"] == settings.metrics_port


def test_the_app_port_answers_only_its_sidecar(overlay: tuple[str, list[Doc]]) -> None:
    # daprd presents the token of `dapr.io/app-token-secret`; the worker must hold the
    # same one (APP_API_TOKEN), or it would answer anyone who reaches its port.
    _, docs = overlay
    deployment = _one(docs, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    [token] = [e for e in container["env"] if e["name"] == "APP_API_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": annotations["dapr.io/app-token-secret"],
        "key": "token",  # the key daprd reads from that Secret
    }


def test_shutdown_graces_are_nested(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployment = _one(docs, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    worker = _settings(deployment).shutdown_grace_seconds
    block = float(annotations["dapr.io/block-shutdown-duration"].removesuffix("s"))
    dapr = float(annotations["dapr.io/graceful-shutdown-seconds"])
    pod = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker < block, "daprd must keep its APIs up while the worker drains"
    assert worker < dapr < pod
    assert block + dapr <= pod


def test_pod_security(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    spec = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in container
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_the_inbound_retry_policy_redelivers_forever(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    resiliency = _one(docs, "Resiliency")
    settings = _settings(_one(docs, "Deployment"))
    assert "llm-stream-worker" in resiliency["scopes"]
    spec = resiliency["spec"]
    target = spec["targets"]["components"][settings.pubsub_name]
    assert spec["policies"]["retries"][target["inbound"]["retry"]]["maxRetries"] == -1
    assert spec["policies"]["retries"][target["outbound"]["retry"]]["maxRetries"] >= 1


def _pubsub(docs: list[Doc]) -> Doc:
    return _one(docs, "Component", "pubsub")


def test_topic_scopes_let_the_worker_do_its_job(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    settings = _settings(_one(docs, "Deployment"))
    meta = _meta(_pubsub(docs))

    def scopes(key: str) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for entry in meta[key]["value"].split(";"):
            app, _, topics = entry.partition("=")
            result[app] = set(topics.split(","))
        return result

    allowed = set(meta["allowedTopics"]["value"].split(","))
    worker_topics = {
        settings.prompt_topic,
        settings.response_topic,
        settings.cancel_topic,
        settings.deadletter_topic,
    }
    assert worker_topics <= allowed
    assert set(meta["protectedTopics"]["value"].split(",")) == worker_topics
    publishing = scopes("publishingScopes")[settings.app_id]
    subscribing = scopes("subscriptionScopes")[settings.app_id]
    assert publishing == {settings.response_topic, settings.deadletter_topic}
    assert subscribing == {settings.prompt_topic, settings.cancel_topic}


def test_both_overlays_scope_topics_alike() -> None:
    keys = ("allowedTopics", "protectedTopics", "publishingScopes", "subscriptionScopes")
    values = [
        {k: _meta(_pubsub(render(REPO_ROOT / "k8s" / "overlays" / name)))[k] for k in keys}
        for name in OVERLAYS
    ]
    assert all(v == values[0] for v in values)


def test_brokers(overlay: tuple[str, list[Doc]]) -> None:
    name, docs = overlay
    pubsub = _pubsub(docs)
    meta = _meta(pubsub)
    settings = _settings(_one(docs, "Deployment"))
    if name == "redis":
        assert pubsub["spec"]["type"] == "pubsub.redis"
        assert int(meta["concurrency"]["value"]) >= settings.max_concurrent_streams
        assert int(meta["queueDepth"]["value"]) >= settings.max_concurrent_streams
        assert "secretKeyRef" in meta["redisPassword"]
    else:
        assert pubsub["spec"]["type"] == "pubsub.kafka"
        assert meta["consumerGroup"]["value"] == "{appID}"


def test_exactly_one_autoscaler_per_overlay(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    scalers = [d for d in docs if d["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    assert len(scalers) == 1
    (scaler,) = scalers
    assert scaler["spec"]["scaleTargetRef"]["name"] == _one(docs, "Deployment")["metadata"]["name"]
    if scaler["kind"] == "ScaledObject":
        settings = _settings(_one(docs, "Deployment"))
        (trigger,) = scaler["spec"]["triggers"]
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["stream"] == settings.prompt_topic
        # Dapr's Redis Streams consumer group is the app id.
        assert trigger["metadata"]["consumerGroup"] == settings.app_id
        assert "consumerID" not in _meta(_pubsub(docs))
        assert int(trigger["metadata"]["pendingEntriesCount"]) <= settings.max_concurrent_streams
        auth = _one(docs, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_the_declarative_subscription_says_what_the_worker_reports() -> None:
    docs = render(REPO_ROOT / "k8s" / "overlays" / "kafka")
    subscription = _one(docs, "Subscription")
    settings = _settings(_one(docs, "Deployment"))
    assert subscription["apiVersion"] == "dapr.io/v2alpha1"
    assert subscription["scopes"] == [settings.app_id]
    spec = subscription["spec"]
    assert spec["pubsubname"] == settings.pubsub_name
    assert spec["topic"] == settings.prompt_topic
    assert spec["deadLetterTopic"] == settings.deadletter_topic == "prompts-deadletter"
    # Bulk delivery only if the worker asks for it too (off: one at a time per partition).
    assert ("bulkSubscribe" in spec) == settings.bulk_subscribe.enabled
    if settings.bulk_subscribe.enabled:
        bulk = spec["bulkSubscribe"]
        assert bulk["enabled"] is True
        assert bulk["maxMessagesCount"] == settings.bulk_subscribe.max_messages
        assert bulk["maxAwaitDurationMs"] == settings.bulk_subscribe.max_await_ms


def test_every_prompt_consumer_is_a_member_of_the_workers_group_with_retries(
    overlay: tuple[str, list[Doc]],
) -> None:
    _, docs = overlay
    settings = _settings(_one(docs, "Deployment"))
    main = _meta(_pubsub(docs))
    retried = _one(docs, "Resiliency")["spec"]["targets"]["components"]
    for name in settings.prompt_pubsub_names:
        component = _one(docs, "Component", name)
        meta = _meta(component)
        assert component["spec"]["type"] == _pubsub(docs)["spec"]["type"]
        assert component["scopes"] == [settings.app_id]
        for key in ("brokers", "redisHost", "consumerGroup"):
            assert meta.get(key) == main.get(key)
        assert retried[name]["inbound"]["retry"] == "redeliver"
        subscribing = dict(e.split("=") for e in meta["subscriptionScopes"]["value"].split(";"))
        assert settings.prompt_topic in subscribing[settings.app_id].split(",")


def test_the_kafka_tests_run_what_the_kafka_overlay_deploys(tmp_path: Path) -> None:
    docs = render(REPO_ROOT / "k8s" / "overlays" / "kafka")
    deployed = _settings(_one(docs, "Deployment"))
    # Only its settings are read: no broker is started.
    server = KafkaServer(tmp_path, tmp_path, port=0, controller_port=0, partitions=3)
    broker = KafkaBroker.deployed(server)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in broker.worker_env.items():
            patch.setenv(key, value)
        tested = Settings()
    assert tested.prompt_pubsub_names == deployed.prompt_pubsub_names
    assert tested.bulk_subscribe == deployed.bulk_subscribe
    components = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Component"}
    for spec in broker.worker_pubsubs():
        shipped = _meta(components[spec.name])
        for key, value in spec.metadata.items():
            if key != "brokers":
                assert shipped[key]["value"] == value, (spec.name, key)


def test_llm_endpoint_and_conversation_keys_come_from_secrets(
    overlay: tuple[str, list[Doc]],
) -> None:
    _, docs = overlay
    endpoint = _one(docs, "HTTPEndpoint")
    (header,) = endpoint["spec"]["headers"]
    assert header["name"] == "Authorization"
    assert set(header) == {"name", "secretKeyRef"}
    conversation = _one(docs, "Component", "openai-conversation")
    assert conversation["spec"]["type"] == "conversation.openai"
    assert "secretKeyRef" in _meta(conversation)["key"]
    settings = _settings(_one(docs, "Deployment"))
    assert "openai-conversation" in settings.conversation_components
    (openai,) = settings.openai
    assert f"/v1.0/invoke/{endpoint['metadata']['name']}/method/" in openai.base_url
    assert openai.api_key is None


def test_tracing_configuration(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    spec = _one(docs, "Configuration")["spec"]
    assert spec["tracing"]["samplingRate"] == "1"
    assert spec["tracing"]["otel"]["endpointAddress"]
    assert "nameResolution" not in spec


def _all_documents() -> Iterator[Doc]:
    for name in OVERLAYS:
        yield from render(REPO_ROOT / "k8s" / "overlays" / name)


def test_no_document_carries_a_secret_value() -> None:
    for doc in _all_documents():
        assert doc["kind"] != "Secret"
        text = repr(doc)
        assert "sk-" not in text
        assert "Bearer " not in text


# --- autoscaling, image, scraping, clients ----------------------------------------------


def test_the_deployment_leaves_the_replica_count_to_the_autoscaler(
    overlay: tuple[str, list[Doc]],
) -> None:
    _, docs = overlay
    # A count here would reset the autoscaler's on every `kubectl apply -k`.
    assert "replicas" not in _one(docs, "Deployment")["spec"]


def test_the_image_is_fully_qualified_and_set_by_kustomize(
    overlay: tuple[str, list[Doc]],
) -> None:
    _, docs = overlay
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    # registry host (with a dot) / path : tag, so no runtime guesses docker.io for it.
    assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+(:\d+)?/[a-z0-9._/-]+:[\w.-]+", image), image
    kustomization = yaml.safe_load((REPO_ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    assert image == f"{entry.get('newName', entry['name'])}:{entry['newTag']}"
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert entry["newTag"] == version


def test_the_worker_and_its_sidecar_are_scraped(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployment = _one(docs, "Deployment")
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    settings = _settings(deployment)
    # The default host is loopback: the Deployment must open it to the pod IP.
    assert settings.metrics_host == "0.0.0.0"
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    monitor = _one(docs, "PodMonitor")
    labels = template["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert endpoints["metrics"] == "/metrics"
    # The port the Dapr injector gives daprd's metrics (dapr.io/metrics-port), by name.
    injector = (dapr_module_dir() / "pkg" / "injector" / "consts" / "consts.go").read_text()
    assert 'SidecarMetricsPortName         = "dapr-metrics"' in injector
    assert annotations["dapr.io/enable-metrics"] == "true"
    assert endpoints["dapr-metrics"] == "/"


def test_clients_get_a_consumer_group_per_pod_and_the_worker_one_for_all(
    overlay: tuple[str, list[Doc]],
) -> None:
    name, docs = overlay
    settings = _settings(_one(docs, "Deployment"))
    worker = _pubsub(docs)
    clients = _one(docs, "Component", "pubsub-clients")
    group_key = {"redis": "consumerID", "kafka": "consumerGroup"}[name]
    assert clients["spec"]["type"] == worker["spec"]["type"]
    assert _meta(clients)[group_key]["value"] == "{podName}"
    # The worker's replicas share one group (the app id): one answer per prompt.
    assert _meta(worker).get(group_key, {"value": "{appID}"})["value"] == "{appID}"
    assert worker["scopes"] == [settings.app_id]
    assert settings.app_id not in clients["scopes"]
    same_broker = {"redis": "redisHost", "kafka": "brokers"}[name]
    assert _meta(clients)[same_broker] == _meta(worker)[same_broker]
    publishing = dict(e.split("=") for e in _meta(clients)["publishingScopes"]["value"].split(";"))
    subscribing = dict(
        e.split("=") for e in _meta(clients)["subscriptionScopes"]["value"].split(";")
    )
    for app in clients["scopes"]:
        assert set(publishing[app].split(",")) == {settings.prompt_topic, settings.cancel_topic}
        assert subscribing[app] == settings.response_topic
