"""`make bench` keeps working: the harness runs end to end and measures complete runs.

The smoke profile (a few streams, about 40 s) on the real daprd and Redis. Nothing here
asserts a speed: the figures belong in BENCHMARKS.md, measured by `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dapr

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_every_scenario_to_the_end_and_loses_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.bench", "--profile", "smoke"),
            *("--no-report", "--results", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    names = [s["name"] for s in results["scenarios"]]
    assert "naive-10x20" in names
    assert "worker-10x20" in names
    for scenario in results["scenarios"]:
        assert scenario["completed"] == scenario["streams"], scenario["name"]
        assert scenario["tokens_received"] == scenario["tokens_emitted"] > 0, scenario["name"]
        assert scenario["latency_ms_p50"] is not None, scenario["name"]
        assert scenario["notes"] == [], scenario["name"]
    assert {(limit["publishers"], limit["batch"]) for limit in results["limit"]} >= {
        (1, 1),
        (4, 50),
    }
    for limit in results["limit"]:
        assert limit["delivered"] == limit["published"] > 0
    # The tables a user reads.
    assert "| target | measured | verdict |" in result.stdout
    assert "added latency p50 / p99 / max (ms)" in result.stdout
