"""The gateway imports the contract and the client's building blocks, nothing of the
worker's runtime (architecture: "the contract is the shared floor")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import llm_stream_gateway

ALLOWED = ("worker.contract", "worker.client.consumer", "worker.client.prompt",
           "worker.client.errors", "worker.client.types")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


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
    """Not only its own imports: what they import in turn (a fresh interpreter)."""
    probe = (
        "import sys, llm_stream_gateway.__main__\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('dapr', 'grpc')"
        " or m.startswith(('worker.pipeline', 'worker.transport', 'worker.service',"
        " 'worker.main', 'worker.llm'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == []
