"""Render the kustomize overlays and validate every document against its schema.

Kubernetes kinds: the JSON schemas of `kubernetes-validate` for one pinned Kubernetes
release, in strict mode (unknown fields are errors). Dapr kinds: the OpenAPI v3 schemas
of the CRDs shipped in the pinned Dapr module (tools/daprd/go.mod), made strict the same
way, since the API server's strict field validation rejects unknown fields of a
structural CRD too. KEDA kinds and the Prometheus Operator's PodMonitor: no schema is
available offline, so their required fields are checked by hand (`check_keda`,
`check_podmonitor`).
"""

from __future__ import annotations

import copy
import functools
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

__all__ = [
    "KUBERNETES_VERSION",
    "OVERLAYS",
    "REPO_ROOT",
    "ManifestError",
    "check_keda",
    "check_podmonitor",
    "dapr_crd_schemas",
    "dapr_module_dir",
    "kustomize_binary",
    "render",
    "strict_schema",
    "validate",
    "validate_dapr",
    "validate_kubernetes",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS = ("redis", "kafka")
# The oldest Kubernetes release the manifests promise to work on.
KUBERNETES_VERSION = "1.33.0"

Document = dict[str, Any]


class ManifestError(Exception):
    """A rendered document that its schema rejects, or that nothing can check."""


@functools.cache
def kustomize_binary() -> str:
    """tools/kustomize/build.sh: the cached kustomize-render, built with Go if missing."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "kustomize" / "build.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return result.stdout.strip()


def render(kustomization_dir: Path) -> list[Document]:
    """`kustomize build DIR`, parsed; raises ManifestError with kustomize's message."""
    result = subprocess.run(
        [kustomize_binary(), str(kustomization_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ManifestError(f"kustomize build {kustomization_dir} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def dapr_module_dir() -> Path:
    """The pinned Dapr module's source, downloaded through the Go module proxy if needed."""
    tools = REPO_ROOT / "tools" / "daprd"
    subprocess.run(
        ["go", "mod", "download", "github.com/dapr/dapr"],
        cwd=tools,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "github.com/dapr/dapr"],
        cwd=tools,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(result.stdout.strip())


def strict_schema(schema: Any) -> Any:
    """A copy in which every object with declared properties rejects undeclared ones.

    Objects marked x-kubernetes-preserve-unknown-fields, or with additionalProperties
    of their own (maps), stay open, as in the API server's pruning.
    """
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@functools.cache
def dapr_crd_schemas() -> Mapping[tuple[str, str], Any]:
    """(apiVersion, kind) -> the strict OpenAPI v3 schema of that served CRD version."""
    schemas: dict[tuple[str, str], Any] = {}
    crds = dapr_module_dir() / "charts" / "dapr" / "crds"
    for path in sorted(crds.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", False):
                    continue
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = strict_schema(schema)
    if not schemas:
        raise ManifestError(f"no Dapr CRDs found in {crds}")
    return schemas


def _errors(validator: jsonschema.protocols.Validator, doc: Document) -> Iterator[str]:
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(part) for part in error.absolute_path) or "<root>"
        yield f"{where}: {error.message}"


def validate_dapr(doc: Document) -> None:
    schema = dapr_crd_schemas().get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if schema is None:
        raise ManifestError(f"no Dapr CRD serves {doc.get('apiVersion')} {doc.get('kind')}")
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(_errors(validator, doc))
    if errors:
        raise ManifestError(f"{_name(doc)}: " + "; ".join(errors))


def validate_kubernetes(doc: Document) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path) or "<root>"
        raise ManifestError(f"{_name(doc)}: {where}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{_name(doc)}: {exc.message}") from None


_KEDA_TRIGGER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "redis-streams": ("stream", "consumerGroup"),
    "kafka": ("bootstrapServers", "consumerGroup", "topic"),
    "cpu": ("value",),
}


def check_keda(doc: Document) -> None:
    """Structural checks of KEDA kinds, after KEDA's documented required fields."""
    kind = doc.get("kind")
    spec = doc.get("spec")
    problems: list[str] = []
    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not keda.sh/v1alpha1")
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        problems.append("metadata.name missing")
    if not isinstance(spec, dict):
        raise ManifestError(f"{_name(doc)}: spec missing")
    if kind == "ScaledObject":
        problems += _check_scaled_object(spec)
    elif kind == "TriggerAuthentication":
        refs = spec.get("secretTargetRef")
        if not isinstance(refs, list) or not refs:
            problems.append("spec.secretTargetRef must be a non-empty list")
        else:
            for i, ref in enumerate(refs):
                if not isinstance(ref, dict) or set(ref) != {"parameter", "name", "key"}:
                    problems.append(f"spec.secretTargetRef[{i}] needs exactly parameter, name, key")
    else:
        problems.append(f"unknown KEDA kind {kind!r}")
    if problems:
        raise ManifestError(f"{_name(doc)}: " + "; ".join(problems))


def _check_scaled_object(spec: Document) -> list[str]:
    problems: list[str] = []
    known = {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "idleReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "advanced",
        "fallback",
        "triggers",
    }
    problems += [f"spec.{key}: unknown field" for key in sorted(set(spec) - known)]
    target = spec.get("scaleTargetRef")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str):
        problems.append("spec.scaleTargetRef.name (string) is required")
    for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool)):
            problems.append(f"spec.{key} must be an integer")
    if (
        isinstance(spec.get("minReplicaCount"), int)
        and isinstance(spec.get("maxReplicaCount"), int)
        and spec["minReplicaCount"] > spec["maxReplicaCount"]
    ):
        problems.append("spec.minReplicaCount > spec.maxReplicaCount")
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        return [*problems, "spec.triggers must be a non-empty list"]
    for i, trigger in enumerate(triggers):
        if not isinstance(trigger, dict) or not isinstance(trigger.get("type"), str):
            problems.append(f"spec.triggers[{i}].type (string) is required")
            continue
        metadata = trigger.get("metadata")
        if not isinstance(metadata, dict):
            problems.append(f"spec.triggers[{i}].metadata (map) is required")
            continue
        for key, value in metadata.items():
            if not isinstance(value, str):
                problems.append(f"spec.triggers[{i}].metadata.{key} must be a string")
        for key in _KEDA_TRIGGER_FIELDS.get(trigger["type"], ()):
            if key not in metadata:
                problems.append(f"spec.triggers[{i}].metadata.{key} is required")
        if trigger["type"] == "redis-streams" and not (
            {"address", "addressFromEnv", "host", "hostFromEnv"} & set(metadata)
        ):
            problems.append(f"spec.triggers[{i}].metadata: address or host is required")
        ref = trigger.get("authenticationRef")
        if ref is not None and (not isinstance(ref, dict) or not ref.get("name")):
            problems.append(f"spec.triggers[{i}].authenticationRef.name is required")
    return problems


_PODMONITOR_ENDPOINT_FIELDS = {
    "port",
    "portNumber",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}


def check_podmonitor(doc: Document) -> None:
    """Structural checks of a monitoring.coreos.com/v1 PodMonitor (the operator's CRD)."""
    problems: list[str] = []
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PodMonitor":
        problems.append(f"{doc.get('apiVersion')} {doc.get('kind')} is not a v1 PodMonitor")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(f"{_name(doc)}: spec missing")
    known = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"}
    problems += [f"spec.{key}: unknown field" for key in sorted(set(spec) - known)]
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        isinstance(selector.get("matchLabels"), dict)
        or isinstance(selector.get("matchExpressions"), list)
    ):
        problems.append("spec.selector needs matchLabels or matchExpressions")
    endpoints = spec.get("podMetricsEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.podMetricsEndpoints must be a non-empty list")
        endpoints = []
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict):
            problems.append(f"spec.podMetricsEndpoints[{i}] must be a map")
            continue
        problems += [
            f"spec.podMetricsEndpoints[{i}].{key}: unknown field"
            for key in sorted(set(endpoint) - _PODMONITOR_ENDPOINT_FIELDS)
        ]
        if not isinstance(endpoint.get("port"), str) and not isinstance(
            endpoint.get("portNumber"), int
        ):
            problems.append(f"spec.podMetricsEndpoints[{i}]: port (name) or portNumber is required")
        for key in ("path", "interval", "scrapeTimeout", "scheme"):
            if key in endpoint and not isinstance(endpoint[key], str):
                problems.append(f"spec.podMetricsEndpoints[{i}].{key} must be a string")
    if problems:
        raise ManifestError(f"{_name(doc)}: " + "; ".join(problems))


def validate(doc: Document) -> str:
    """Validate one rendered document; returns which schema set checked it."""
    api_version = str(doc.get("apiVersion", ""))
    if api_version.startswith("dapr.io/"):
        validate_dapr(doc)
        return "dapr"
    if api_version.startswith("keda.sh/"):
        check_keda(doc)
        return "keda"
    if api_version.startswith("monitoring.coreos.com/"):
        check_podmonitor(doc)
        return "prometheus-operator"
    validate_kubernetes(doc)
    return "kubernetes"


def _name(doc: Document) -> str:
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')}/{name}"
