"""`python -m bench.gateway` keeps working: it runs end to end and loses nothing.

Nothing here asserts a speed: the figures belong in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dapr

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_benchmark_runs_and_every_client_gets_its_whole_reply(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gateway", "--clients", "3", "--results", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    scenarios = json.loads((tmp_path / "gateway.json").read_text())["scenarios"]
    assert [s["variant"] for s in scenarios] == ["bulk", "per-event"]
    for scenario in scenarios:
        assert scenario["clients"] == scenario["whole_replies"] == 3
        assert scenario["duplicate_events"] == 0
        # Started, usage, completed, and the 20 words in at most 20 chunks.
        assert 3 * 4 <= scenario["response_events"] <= 3 * (20 + 3)
