"""The container image, as far as it can be checked without a Docker engine.

The Dockerfile is parsed and held to its promises (pinned slim base, multi-stage, runtime
dependencies only, non-root, exec-form entry point). Then its build stage is replayed
outside Docker: the locked dependencies (requirements.lock, with hashes) and the wheel
are installed into a fresh virtual environment, pip and setuptools removed as in the image;
the image's ENTRYPOINT command is run from that environment: a bad setting stops it at
once with exit code 2, and with good settings it listens on APP_PORT and exits 0 on
SIGTERM. Not checked here: `docker build` itself and the base image's contents.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from testbed.net import free_port
from tests.k8s.manifests import REPO_ROOT

pytestmark = pytest.mark.slow

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, f"cannot parse FROM {rest!r}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], match[1])
            stages.append(Stage(base=base, name=match[2], instructions=[]))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def entrypoint(stage: Stage) -> list[str]:
    (raw,) = stage.all("ENTRYPOINT")
    command = json.loads(raw)  # exec form is a JSON array; shell form is not JSON
    assert isinstance(command, list)
    assert all(isinstance(part, str) for part in command)
    return command


# --- the Dockerfile's promises --------------------------------------------------------


def test_base_image_is_a_pinned_slim_python_311(stages: list[Stage]) -> None:
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", stage.base), (
            stage.base
        )
    assert len({stage.base for stage in stages}) == 1, "the venv is copied between stages"


def test_multi_stage_with_only_the_runtime_in_the_final_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    copies = final.all("COPY")
    assert copies, "the final stage copies the built environment"
    assert all(c.startswith("--from=") for c in copies), copies
    assert not final.all("ADD")
    for run in final.all("RUN"):
        assert "pip" not in run, f"no installing in the final stage: {run}"
    build_runs = " ".join(run for stage in stages[:-1] for run in stage.all("RUN"))
    assert "[dev]" not in build_runs
    assert "--no-deps" in build_runs, "the wheel is built alone; deps come from the index"


def test_final_stage_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    (user,) = stages[-1].all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_entrypoint_is_exec_form(stages: list[Stage]) -> None:
    assert entrypoint(stages[-1]) == ["llm-stream-worker"]
    assert not stages[-1].all("CMD")


def test_dockerignore_keeps_the_context_to_what_the_wheel_needs() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!LICENSE", "!requirements.lock", "!worker/"} <= set(
        lines
    )
    copied = {
        part
        for stage in parse_dockerfile(DOCKERFILE.read_text())[1]
        for copy in stage.all("COPY")
        if not copy.startswith("--from=")
        for part in copy.split()[:-1]
    }
    assert copied == {"requirements.lock", "pyproject.toml", "README.md", "LICENSE", "worker"}


def test_parser_rejects_shell_form() -> None:
    _, stages = parse_dockerfile(
        "FROM python:3.11.11-slim-bookworm\nENTRYPOINT llm-stream-worker\n"
    )
    with pytest.raises(json.JSONDecodeError):
        entrypoint(stages[-1])


# --- the build stage, replayed without Docker -------------------------------------------


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's /opt/venv: the locked dependencies, the wheel, no pip."""
    root = tmp_path_factory.mktemp("image")
    wheels = root / "wheels"
    venv = root / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO_ROOT)],
        check=True,
        cwd=root,
    )
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    lock = str(REPO_ROOT / "requirements.lock")
    subprocess.run([*install, "--require-hashes", "--no-deps", "-r", lock], check=True)
    subprocess.run([*install, "--no-deps", str(wheel)], check=True)
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "-q", "uninstall", "--yes", "pip", "setuptools"],
        check=True,
    )
    return venv


def _env(venv: Path, **settings: str) -> dict[str, str]:
    """A clean environment, like the image's: PATH to the venv first, nothing inherited."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(venv),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **settings,
    }


def test_the_venv_holds_the_runtime_dependencies_only(image_venv: Path) -> None:
    result = subprocess.run(
        [
            str(image_venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'].lower() "
            "for d in m.distributions()))",
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    installed = set(result.stdout.split())
    assert {
        "dapr-llm-stream-worker",
        "dapr",
        "pydantic",
        "aiohttp",
        "opentelemetry-sdk",
    } <= installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis", "testcontainers", "pip"}


def test_entrypoint_exists_in_the_image_venv(image_venv: Path, stages: list[Stage]) -> None:
    command = entrypoint(stages[-1])
    path = image_venv / "bin" / command[0]
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_a_bad_setting_stops_the_entrypoint_at_once(
    image_venv: Path, stages: list[Stage], tmp_path: Path
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        entrypoint(stages[-1]),
        env=_env(image_venv, DAPR_LLM_COMPONENT_DEFAULT="nope"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid configuration" in result.stderr
    assert "DAPR_LLM_COMPONENT_DEFAULT='nope'" in result.stderr
    assert time.monotonic() - started < 15


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def running_worker(
    image_venv: Path, stages: list[Stage], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    app_port = free_port()
    env = _env(
        image_venv,
        APP_PORT=str(app_port),
        DAPR_GRPC_PORT=str(free_port()),
        DAPR_HTTP_PORT=str(free_port()),
        WORKER_METRICS_PORT=str(free_port()),
        WORKER_SHUTDOWN_GRACE_SECONDS="5",
    )
    process = subprocess.Popen(
        entrypoint(stages[-1]),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, app_port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_entrypoint_serves_and_stops_cleanly_on_sigterm(
    running_worker: tuple[subprocess.Popen[str], int],
) -> None:
    process, app_port = running_worker
    deadline = time.monotonic() + 30
    while not _listening(app_port):
        assert process.poll() is None, f"worker exited early:\n{process.communicate()[0]}"
        assert time.monotonic() < deadline, "worker did not listen on APP_PORT within 30 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"listening on 127.0.0.1:{app_port}" in output
    assert "worker stopped" in output


# --- make image ---------------------------------------------------------------------------


def _build_image(tmp_path: Path, docker: str | None) -> subprocess.CompletedProcess[str]:
    """scripts/build-image.sh with `docker` (a script body) as the only docker on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("awk", "tail", "bash", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    if docker is not None:
        (bin_dir / "docker").write_text(f"#!/bin/bash\n{docker}\n")
        (bin_dir / "docker").chmod(0o755)
    return subprocess.run(
        [str(bin_dir / "bash"), str(REPO_ROOT / "scripts" / "build-image.sh")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )


def _kustomized_image() -> str:
    kustomization = yaml.safe_load((REPO_ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    return f"{entry.get('newName', entry['name'])}:{entry['newTag']}"


def test_make_image_skips_with_its_reason_without_docker(tmp_path: Path) -> None:
    result = _build_image(tmp_path, docker=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("make image: skipped: no docker client on PATH")
    assert _kustomized_image() in result.stdout


def test_make_image_skips_with_its_reason_without_an_engine(tmp_path: Path) -> None:
    engine_down = 'echo "Cannot connect to the Docker daemon at unix:///x.sock" >&2; exit 1'
    result = _build_image(tmp_path, docker=engine_down)
    assert result.returncode == 0, result.stderr
    assert "skipped: no Docker engine answers: Cannot connect to the Docker daemon" in (
        result.stdout
    )


def test_make_image_builds_the_kustomized_name_where_an_engine_answers(tmp_path: Path) -> None:
    log = tmp_path / "docker.log"
    result = _build_image(tmp_path, docker=f'echo "$@" >> {log}')
    assert result.returncode == 0, result.stderr
    build = log.read_text().splitlines()[-1]
    assert build == f"build --tag {_kustomized_image()} {REPO_ROOT}"
    assert f"make image: built {_kustomized_image()}" in result.stdout
