"""scripts/daprd.sh with a daprd found on PATH or in ~/.dapr/bin: stdout is only the path,
stderr says which release it found and whether it is the pinned one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED = re.search(
    r"^\s*github\.com/dapr/dapr v(\S+)$",
    (REPO_ROOT / "tools" / "daprd" / "go.mod").read_text(),
    re.MULTILINE,
)


def pinned() -> str:
    assert PINNED is not None
    return PINNED.group(1)


def fake_daprd(folder: Path, version: str) -> Path:
    """A stand-in that answers `--version` as daprd does (the bare version line)."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "daprd"
    binary.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "{version}"\n')
    binary.chmod(0o755)
    return binary


def run_script(home: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "daprd.sh")],
        env={"PATH": path, "HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.mark.parametrize("where", ["PATH", "dapr init"])
def test_an_older_daprd_is_used_and_named_with_the_pinned_release(
    tmp_path: Path, where: str
) -> None:
    if where == "PATH":
        binary = fake_daprd(tmp_path / "bin", "1.14.4")
        path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    else:
        binary = fake_daprd(tmp_path / ".dapr" / "bin", "1.14.4")
        path = "/usr/bin:/bin"

    result = run_script(tmp_path, path)

    assert result.stdout == f"{binary}\n"
    assert "1.14.4" in result.stderr
    assert f"pins {pinned()}" in result.stderr
    assert str(binary) in result.stderr


def test_the_pinned_release_is_named_as_such(tmp_path: Path) -> None:
    binary = fake_daprd(tmp_path / "bin", pinned())

    result = run_script(tmp_path, f"{tmp_path / 'bin'}:/usr/bin:/bin")

    assert result.stdout == f"{binary}\n"
    assert result.stderr == f"daprd.sh: using daprd {pinned()} at {binary} (the pinned release)\n"
