"""The Markdown tables of a run's results."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["fmt", "limit_table", "machine", "scenario_table"]


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "free_h": free.rstrip(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "daprd": os.environ.get("DAPRD", ""),
    }


def _head(columns: str) -> list[str]:
    """A table's head from "name; name:r; ..." (`:r`: a right-aligned column)."""
    names = [c.strip() for c in columns.split(";")]
    titles = [n.removesuffix(":r") for n in names]
    aligns = ["---:" if n.endswith(":r") else "---" for n in names]
    return ["| " + " | ".join(titles) + " |", "| " + " | ".join(aligns) + " |"]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def scenario_table(scenarios: list[dict[str, Any]]) -> str:
    latency = _head(
        "scenario; streams:r; tokens received / emitted (source span); added latency p50 / "
        "p99 / max (ms); worker publish -> ack p50 / p99 (ms, bucket bound); TTFC overhead "
        "p50 / p99 (ms); publish -> started p50 / max (ms)"
    )
    load = _head(
        "scenario; events/s:r; chunks/s streaming:r; tokens/s:r; tokens/chunk mean / max; "
        "events per publish call:r; CPU s / 1000 tok: app / its daprd (app idle); RSS base / "
        "peak (MB); RSS / stream (KB):r; CPUs busy: bench / other jobs"
    )
    for s in scenarios:
        latency.append(
            f"| {s['name']} | {s['streams']} | {s['tokens_received']}/{s['tokens_emitted']} "
            f"({s.get('source_seconds', 0):.1f} s) "
            f"| {fmt(s['latency_ms_p50'], 2)} / {fmt(s['latency_ms_p99'], 2)} / "
            f"{fmt(s['latency_ms_max'], 1)} "
            f"| {fmt(s.get('publish_ack_ms_p50'))} / {fmt(s.get('publish_ack_ms_p99'))} "
            f"| {fmt(s['ttfc_overhead_ms_p50'])} / {fmt(s['ttfc_overhead_ms_p99'])} "
            f"| {fmt(s.get('started_ms_p50'))} / {fmt(s.get('started_ms_max'))} |"
        )
        load.append(
            f"| {s['name']} | {s['events_per_s']:.0f} | {s['streaming_chunks_per_s']:.0f} "
            f"| {s['tokens_per_s']:.0f} "
            f"| {s['tokens_per_chunk_mean']:.2f} / {s['tokens_per_chunk_max']} "
            f"| {fmt(s.get('events_per_publish_call'), 2)} "
            f"| {fmt(s['cpu_s_per_1000_tokens'], 3)} / "
            f"{fmt(s['sidecar_cpu_s_per_1000_tokens'], 3)} "
            f"({fmt(s.get('idle_cpu_percent'))} %) "
            f"| {fmt(s['rss_mb_baseline'])} / {fmt(s['rss_mb_peak'])} "
            f"| {fmt(s['rss_kb_per_stream'])} "
            f"| {fmt(s.get('bench_cpus'), 2)} / {fmt(s.get('foreign_cpus'), 2)} |"
        )
    roles = list(dict.fromkeys(r for s in scenarios for r in s.get("cpus_by_process", {})))
    cpu = [
        "| scenario | " + " | ".join(roles) + " |",
        "| --- |" + " ---: |" * len(roles),
    ]
    for s in scenarios:
        by = s.get("cpus_by_process", {})
        if by:
            cpu.append(f"| {s['name']} | " + " | ".join(fmt(by.get(r), 2) for r in roles) + " |")
    notes = [f"- {s['name']}: {'; '.join(s['notes'])}" for s in scenarios if s["notes"]]
    text = "\n".join(latency) + "\n\n" + "\n".join(load) + "\n"
    if len(cpu) > 2:
        text += "\nCPUs busy by process (CPU seconds per second of the scenario):\n\n"
        text += "\n".join(cpu) + "\n"
    if notes:
        text += "\nNotes:\n\n" + "\n".join(notes) + "\n"
    return text


def limit_table(limits: list[dict[str, Any]]) -> str:
    rows = _head(
        "concurrent publishers:r; events per call (pace):r; published:r; accepted/s:r; "
        "delivered to consumer/s:r; publish -> consumer latency p50 / p99 (ms); CPUs busy: "
        "bench (consumer, and flat-out publishers) / worker's daprd / consumer's daprd / "
        "redis / pacer"
    )
    roles = (
        "consumer + publisher (bench)",
        "worker's daprd",
        "consumer's daprd",
        "redis",
        "pacer",
    )
    for limit in limits:
        by = limit.get("cpus_by_process", {})
        cpus = " / ".join(fmt(by.get(role), 2) for role in roles) if by else "-"
        paced = bool(limit.get("interval"))
        rows.append(
            f"| {limit['publishers']} | {limit.get('batch', 1)}"
            + (" (20/s each, own process, batched as the worker does)" if paced else "")
            + f" | {limit['published']} "
            f"| {limit['accepted_per_s']:.0f} "
            f"| {limit['delivered_per_s']:.0f} "
            f"| {fmt(limit['latency_ms_p50'], 2)} / {fmt(limit['latency_ms_p99'], 2)} "
            f"| {cpus} |"
        )
    return "\n".join(rows)
