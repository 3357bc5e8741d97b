"""The README's supported-versions table agrees with the pins, and the lock with pyproject."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from testbed.containers import REDIS_IMAGE
from testbed.sidecar import DAPR_RUNTIME_VERSION
from tests.k8s.manifests import KUBERNETES_VERSION, REPO_ROOT

PYPROJECT: dict[str, Any] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _table() -> dict[str, str]:
    """component -> the first `code` of its version cell, from the README's table."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (code := re.search(r"`([^`]+)`", cells[1])):
            rows[cells[0]] = code.group(1)
    return rows


def _go_mod_version(module: str) -> str:
    go_mod = (REPO_ROOT / "tools" / "daprd" / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(module)} v(\S+)", go_mod, re.M)
    assert match, f"{module} not in tools/daprd/go.mod"
    return match.group(1)


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, its hashes) from requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = (REPO_ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"not pinned: {line}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def _annotation(overlay: str, key: str) -> str:
    doc = yaml.safe_load((REPO_ROOT / "k8s" / "overlays" / overlay / "pubsub.yaml").read_text())
    value: str = doc["metadata"]["annotations"][key]
    return value


def _pyproject_requirement(name: str) -> Requirement:
    (found,) = [
        Requirement(spec)
        for spec in PYPROJECT["project"]["dependencies"]
        if canonicalize_name(Requirement(spec).name) == name
    ]
    return found


def test_the_table_names_every_component() -> None:
    assert set(_table()) == {
        "Dapr runtime (daprd)",
        "Dapr Python SDK (`dapr`)",
        "Python",
        "Redis",
        "Kafka",
        "Kubernetes",
    }


def test_dapr_runtime_is_the_pinned_module_and_the_tests_image() -> None:
    version = _table()["Dapr runtime (daprd)"]
    assert version == _go_mod_version("github.com/dapr/dapr") == DAPR_RUNTIME_VERSION
    # The k8s docs name the release line the cluster needs.
    minor = ".".join(version.split(".")[:2])
    for doc in ("k8s/README.md", "k8s/base/kustomization.yaml"):
        named = set(re.findall(r"Dapr (\d+\.\d+)", (REPO_ROOT / doc).read_text()))
        assert named == {minor}, f"{doc} names Dapr {named}"


def test_dapr_sdk_range_is_pyprojects_and_the_lock_is_in_it() -> None:
    requirement = _pyproject_requirement("dapr")
    assert SpecifierSet(_table()["Dapr Python SDK (`dapr`)"]) == requirement.specifier
    assert requirement.specifier.contains(_lock()["dapr"][0])


def test_python_is_pyprojects_and_the_images() -> None:
    requires = PYPROJECT["project"]["requires-python"]
    assert _table()["Python"] == requires.split(",")[0]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+\.\d+)-", dockerfile, re.M)
    assert match
    assert Requirement(f"python{requires}").specifier.contains(match.group(1))
    assert f"python:{match.group(1)}-" in (REPO_ROOT / "README.md").read_text()


def test_redis_and_kafka_are_the_tests_and_the_overlays() -> None:
    table = _table()
    assert f"redis:{table['Redis']}-alpine" == REDIS_IMAGE
    assert _annotation("redis", "llm-stream-worker/redis-version") == table["Redis"]
    assert _annotation("kafka", "llm-stream-worker/kafka-version") == table["Kafka"]


def test_kubernetes_is_the_validated_release() -> None:
    assert KUBERNETES_VERSION.startswith(_table()["Kubernetes"] + ".")


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock()
    wanted = [
        Requirement(spec)
        for spec in [
            *PYPROJECT["project"]["dependencies"],
            *PYPROJECT["project"]["optional-dependencies"]["otel"],
        ]
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in requirements.lock: run `make lock`"
        version, _ = lock[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, pyproject wants {requirement}"
        )
    for pinned, (_, hashes) in lock.items():
        assert hashes, f"{pinned} has no hash in requirements.lock"
    # Runtime only: nothing of the [dev] extra.
    assert not {"pytest", "mypy", "ruff", "pip-tools"} & set(lock)
