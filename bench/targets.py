"""The targets a run is judged by, each with what was measured and a verdict."""

from __future__ import annotations

from typing import Any

from bench.tables import fmt

__all__ = ["targets"]


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    by_name = {s["name"]: s for s in results["scenarios"]}
    verdicts: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    w100 = by_name.get("worker-100x20")
    paced = next((limit for limit in results["limit"] if limit.get("interval")), None)
    if w100:
        p50, p99 = w100["latency_ms_p50"], w100["latency_ms_p99"]
        bus50 = bus99 = ""
        if paced:
            bus50 = f" (the bus alone at this load: {fmt(paced['latency_ms_p50'], 2)} ms)"
            bus99 = f" (the bus alone at this load: {fmt(paced['latency_ms_p99'], 2)} ms)"
        verdicts.append(
            (
                "added latency p50 <= 2 ms at 100 streams",
                f"{fmt(p50, 2)} ms{bus50}",
                verdict(p50 <= 2),
            )
        )
        verdicts.append(
            (
                "added latency p99 <= 10 ms at 100 streams",
                f"{fmt(p99, 2)} ms{bus99}",
                verdict(p99 <= 10),
            )
        )
    paced = by_name.get("worker-1x1000")
    flat_out = [limit for limit in results["limit"] if not limit.get("interval")]
    limits = {limit["publishers"]: limit for limit in flat_out if limit.get("batch", 1) == 1}
    if paced and 1 in limits:
        rate = paced["streaming_chunks_per_s"]
        ratio = rate / limits[1]["accepted_per_s"]
        verdicts.append(
            (
                "events/s >= 80% of the limit, one stream: chunks/s of one stream fed "
                "1000 tok/s vs one serial publisher",
                f"{rate:.0f} vs {limits[1]['accepted_per_s']:.0f} = {ratio:.0%}",
                verdict(ratio >= 0.8),
            )
        )
    workers = [s for s in results["scenarios"] if s["app"] == "worker" and s["streams"] > 1]
    if workers and flat_out:
        # Both counted where they arrive, at the consumer: what the bus sustains. (An
        # accepted rate above it only fills the Redis stream.)
        best = max(workers, key=lambda s: s["events_per_s"])
        top = max(flat_out, key=lambda limit: limit["delivered_per_s"])
        ratio = best["events_per_s"] / top["delivered_per_s"]
        verdicts.append(
            (
                "events/s >= 80% of the limit, many streams: best worker scenario vs the "
                "best limit, both delivered to the consumer (the limit's accepted rate in "
                "brackets)",
                f"{best['events_per_s']:.0f} ({best['name']}) vs {top['delivered_per_s']:.0f} "
                f"({top['accepted_per_s']:.0f}) with {top['publishers']} publishers x "
                f"{top.get('batch', 1)} events per call = {ratio:.0%}",
                verdict(ratio >= 0.8),
            )
        )
    naive = next((s for s in results["scenarios"] if s["app"] == "naive"), None)
    if w100 and naive:
        ratio = w100["tokens_per_s"] / max(naive["tokens_per_s"], 1e-9)
        verdicts.append(
            (
                ">= 5x naive tokens/s at 100 streams",
                f"{w100['tokens_per_s']:.0f} vs {naive['tokens_per_s']:.0f} = {ratio:.1f}x",
                verdict(ratio >= 5),
            )
        )
    w500 = by_name.get("worker-500x20")
    if w500:
        ok = w500["latency_ms_p99"] is not None and w500["latency_ms_p99"] < 100
        complete = w500["tokens_received"] == w500["tokens_emitted"] and w500["completed"] == 500
        verdicts.append(
            (
                "500 streams at 20 tok/s, p99 < 100 ms",
                f"p99 {fmt(w500['latency_ms_p99'], 1)} ms, "
                f"{w500['tokens_per_s']:.0f} tok/s (offered {500 * 20}), "
                f"{w500['completed']}/500 completed",
                verdict(ok and complete),
            )
        )
        verdicts.append(
            (
                "RSS < 150 MB at 500 streams",
                f"peak {fmt(w500['rss_mb_peak'])} MB",
                verdict(w500["rss_mb_peak"] < 150),
            )
        )
    else:
        verdicts.append(("500 streams at 20 tok/s, p99 < 100 ms", "full profile only", "-"))
        verdicts.append(("RSS < 150 MB at 500 streams", "full profile only", "-"))
    return verdicts
