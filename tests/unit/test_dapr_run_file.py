"""dapr.yaml against the Dapr CLI's run-file format (`dapr run -f`).

The schema (tests/unit/schemas/dapr-run-file.schema.json) is derived from dapr/cli's Go
structs, pkg/runfileconfig/run_file_config.go and pkg/standalone/run.go, at the commit
its $comment names. The CLI reads the file with yaml.v2, which ignores unknown keys, so
the schema's closed objects catch what the CLI would silently skip. What the structs do
not say, the parser (pkg/runfileconfig/run_file_config_parser.go) does, and the tests
below follow it: paths in `common` are relative to the run file, paths of an app to its
appDirPath; an app's own .dapr/resources or .dapr/config.yaml beats `common`; a field an
app leaves empty takes the value in `common`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from testbed.components import tracing_configuration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_FILE = REPO_ROOT / "dapr.yaml"
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "dapr-run-file.schema.json").read_text())
# SharedRunConfig's keys: the ones `common` may set and an app inherits.
SHARED_KEYS = set(SCHEMA["properties"]["common"]["properties"])
WORKER_APP_ID = "llm-stream-worker"


@pytest.fixture(scope="module")
def run_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RUN_FILE.read_text())
    return loaded


def effective_apps(run_file: dict[str, Any]) -> list[dict[str, Any]]:
    """Each app as the CLI runs it: empty shared fields filled from `common`, paths absolute."""
    base = RUN_FILE.parent
    common = run_file.get("common", {})
    apps = []
    for app in run_file["apps"]:
        app_dir = (base / app["appDirPath"]).resolve()
        # A shared field the app leaves empty (Go's zero value) comes from `common`.
        own = {key: value for key, value in app.items() if value or key not in SHARED_KEYS}
        resources = [app_dir / p for p in app.get("resourcesPaths", [])]
        config = app_dir / app["configFilePath"] if app.get("configFilePath") else None
        # The CLI's precedence: the app's own .dapr folder first, then `common`.
        if not resources and not (app_dir / ".dapr" / "resources").exists():
            resources = [base / p for p in common.get("resourcesPaths", [])]
        if config is None and not (app_dir / ".dapr" / "config.yaml").exists():
            config = base / common["configFilePath"] if common.get("configFilePath") else None
        apps.append(
            {
                **common,
                **own,
                "appDirPath": app_dir,
                "resourcesPaths": [p.resolve() for p in resources],
                "configFilePath": config.resolve() if config else None,
            }
        )
    return apps


def test_the_run_file_matches_the_cli_structs(run_file: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(run_file, SCHEMA)


def test_the_schema_rejects_what_the_cli_would_misread() -> None:
    """The schema is not a rubber stamp: a typo'd key and a wrong type fail."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    good = {"version": 1, "apps": [{"appDirPath": ".", "appPort": 1}]}
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "version": 0})
    assert not validator.is_valid({"version": 1, "apps": [{"appDirPath": ".", "appport": 1}]})
    assert not validator.is_valid({"version": 1, "apps": [{"appDirPath": ".", "appPort": "1"}]})
    assert not validator.is_valid({"version": 1, "apps": [{"appPort": 1}]})
    assert not validator.is_valid({**good, "common": {"appLogDestination": "stdout"}})


def test_every_path_exists_where_the_cli_resolves_it(run_file: dict[str, Any]) -> None:
    for app in effective_apps(run_file):
        assert app["appDirPath"].is_dir()
        assert app["resourcesPaths"]
        for folder in app["resourcesPaths"]:
            assert folder.is_dir(), folder
        assert app["configFilePath"] is not None
        assert app["configFilePath"].is_file()
        # The command runs in appDirPath: the script it names is there.
        scripts = [arg for arg in app["command"] if arg.endswith(".py")]
        for script in scripts:
            assert (app["appDirPath"] / script).is_file(), script


def test_it_runs_the_worker_and_the_example_consumer_each_on_its_own_sidecar(
    run_file: dict[str, Any],
) -> None:
    apps = {app["appID"]: app for app in effective_apps(run_file)}
    assert set(apps) == {WORKER_APP_ID, "downstream"}
    assert apps[WORKER_APP_ID]["command"][1:] == ["-m", "worker"]
    assert apps["downstream"]["command"][1:] == ["examples/downstream_service.py", "--follow"]
    for key in ("appPort", "daprGRPCPort", "daprHTTPPort"):
        ports = [app[key] for app in apps.values()]
        assert len(set(ports)) == len(ports), key
    # Both are gRPC apps; the CLI hands appPort, daprGRPCPort and daprHTTPPort to each
    # app as APP_PORT, DAPR_GRPC_PORT and DAPR_HTTP_PORT (RunConfig's env tags), the
    # variables they read (the worker publishes over the HTTP one).
    assert {app["appProtocol"] for app in apps.values()} == {"grpc"}


def _documents(folder: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_the_resources_are_the_deployed_redis_set(run_file: dict[str, Any]) -> None:
    for app in effective_apps(run_file):
        docs = [doc for folder in app["resourcesPaths"] for doc in _documents(folder)]
        components = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Component"}
        assert components["pubsub"]["type"] == "pubsub.redis"
        assert components["statestore"]["type"] == "state.redis"
        hosts = {
            item["value"]
            for spec in components.values()
            for item in spec.get("metadata", [])
            if item["name"] == "redisHost"
        }
        assert hosts == {"localhost:6379"}  # where `dapr init` runs Redis
        (resiliency,) = [d for d in docs if d["kind"] == "Resiliency"]
        assert WORKER_APP_ID in resiliency["scopes"]
        inbound = resiliency["spec"]["targets"]["components"]["pubsub"]["inbound"]
        assert resiliency["spec"]["policies"]["retries"][inbound["retry"]]["maxRetries"] == -1


def registered_name_resolvers() -> set[str]:
    return set(
        re.findall(
            r'nrLoader\.DefaultRegistry\.RegisterComponent\([^,]+, "([^"]+)"\)',
            (REPO_ROOT / "tools" / "daprd" / "main.go").read_text(),
        )
    )


def test_the_sidecar_configuration_selects_a_resolver_our_daprd_registers(
    run_file: dict[str, Any],
) -> None:
    """No CREATE_COMPONENT_FAILURE for mdns: dapr.yaml, `make run` (scripts/local-lib.sh)
    and the test harness each hand daprd a Configuration naming a resolver it has."""
    registered = registered_name_resolvers()
    assert registered == {"nameformat"}
    configurations = [
        yaml.safe_load(app["configFilePath"].read_text()) for app in effective_apps(run_file)
    ]
    assert (
        'SIDECAR_CONFIG="$PWD/components/config/sidecar.yaml"'
        in (REPO_ROOT / "scripts" / "local-lib.sh").read_text()
    )
    configurations.append(
        yaml.safe_load((REPO_ROOT / "components/config/sidecar.yaml").read_text())
    )
    configurations.append(yaml.safe_load(tracing_configuration()))
    for config in configurations:
        assert config["kind"] == "Configuration"
        assert config["spec"]["nameResolution"]["component"] in registered
