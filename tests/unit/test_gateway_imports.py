"""The gateway and the client import the contract's floor, nothing of the worker's
runtime (architecture: "the contract is the shared floor")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import llm_stream_gateway
import worker.client

ALLOWED = ("worker.contract", "worker.client.consumer", "worker.client.prompt",
           "worker.client.errors", "worker.client.types")  # fmt: skip
# The client's own modules, the floor, and the edge's half that calls the sidecar (which
# the worker calls it through too) with the errors that edge raises.
CLIENT_ALLOWED = ("worker.client", "worker.contract", "worker.transport.sidecar",
                  "worker.errors")  # fmt: skip
# What runs the worker: none of it may load with the client or the gateway.
RUNTIME = ("worker.pipeline", "worker.transport.dapr", "worker.llm", "worker.service",
           "worker.main", "worker.settings", "worker.observability")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _loaded(imports: str) -> list[str]:
    """The modules of the worker's runtime, and of gRPC and the Dapr SDK, that `imports`
    loads, in a fresh interpreter: not only its own imports, what they import in turn."""
    probe = (
        f"import sys\n{imports}\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('dapr', 'grpc')"
        f" or m.startswith({RUNTIME!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


def test_the_gateway_imports_nothing_of_the_worker_runtime() -> None:
    package = Path(llm_stream_gateway.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert modules
    for module in modules:
        for name in _imports(module):
            top = name.split(".")[0]
            assert top not in {"dapr", "grpc"}, f"{module.name} imports {name}"
            if top == "worker":
                assert name.startswith(ALLOWED), f"{module.name} imports {name}"


def test_running_the_gateway_loads_no_worker_runtime_nor_grpc() -> None:
    assert _loaded("import llm_stream_gateway.__main__") == []


def test_the_client_imports_only_itself_the_floor_and_the_sidecar_edge() -> None:
    package = Path(worker.client.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert modules
    for module in modules:
        for name in _imports(module):
            if name.split(".")[0] == "worker":
                assert name.startswith(CLIENT_ALLOWED), f"{module.name} imports {name}"


def test_the_whole_client_loads_no_worker_runtime() -> None:
    """Clients, CLI and all: only the sidecar edge's gRPC, none of the app callback."""
    loaded = _loaded(
        "import worker.client.cli, worker.client.sync\n"
        "from worker.client import AsyncClient, Client, generate"
    )
    assert [m for m in loaded if m.startswith("worker")] == []
    assert "grpc" in loaded  # the probe sees what is loaded: the edge client is


def test_the_clients_building_blocks_load_no_grpc() -> None:
    """What the gateway and consumers use (the Reassembler, prompts, types) stays light:
    the transport loads only with `AsyncClient`, `Client` or `generate`."""
    assert _loaded("from worker.client import Reassembler, GenerateOptions, ClientError") == []
