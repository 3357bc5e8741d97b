"""BENCHMARKS.md: each profile's section from bench/results/*.json, then the hand-written part."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.config import ROOT
from bench.tables import fmt, limit_table, scenario_table
from bench.targets import targets

__all__ = [
    "MARKER",
    "PREAMBLE",
    "REPORT",
    "RESULTS",
    "comparison",
    "plot",
    "render",
    "write_report",
]


RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "BENCHMARKS.md"


def render(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    shown = f"`{command}`"
    if command.endswith(("--profile quick", "--profile full")):
        target = "bench" if command.endswith("quick") else "bench-full"
        shown = f"`make {target}` (`{command}`)"
    rows = ["| target | measured | verdict |", "| --- | --- | --- |"]
    rows += [f"| {a} | {b} | {c} |" for a, b, c in targets(results)]
    return f"""### Profile `{results["profile"]}`

Command: {shown}, wall time {results["wall_seconds"]:.0f} s.

Machine: {m["nproc"]} CPUs ({m["cpu"]}), Python {m["python"]}, kernel {m["kernel"]}.
Everything (Redis, two daprd, the worker, the fake LLM, the consumer) shares these CPUs.

```
{m["free_h"]}
```

Streams (worker rows: `python -m worker`; naive row: `bench/naive_app.py`):

{scenario_table(results["scenarios"])}

The limit (structured CloudEvents published to the worker's daprd as fast as it
accepts them, same Redis, delivered to the same consumer):

{limit_table(results["limit"])}

Targets:

{chr(10).join(rows)}
"""


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [
        s
        for s in results["scenarios"]
        if s["app"] == "worker" and s["token_interval"] == 0.05 and s["latency_ms_p50"] is not None
    ]
    if not rows:
        return False
    xs = [s["streams"] for s in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [s["latency_ms_p50"] for s in rows], "o-", label="p50")
    ax.plot(xs, [s["latency_ms_p99"] for s in rows], "s-", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams (20 tokens/s each)")
    ax.set_ylabel("added latency per token (ms)")
    ax.set_title(f"worker added latency ({results['profile']} profile)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


MARKER = "<!-- Written by hand below this line; bench/bench.py keeps it. -->"


PREAMBLE = """# Benchmarks

How fast the worker streams, measured end to end against a real daprd (1.18.3, built by
`scripts/daprd.sh`) and a real Redis, by `bench/bench.py`:

    make bench        # quick profile (about 2 minutes)
    make bench-full   # adds 500 streams and longer streams (about 5 minutes)

Set-up per run: Redis; the worker's daprd (Redis pub/sub with `concurrency`/`queueDepth`
512 and `processingTimeout` 300000 ms as in `components/redis/pubsub.yaml`, Redis state store,
tracing sampled as in `components/config/sidecar.yaml`); `python -m worker` with its
OpenAI-compatible backend pointed at `tests/fakes/openai_server.py` (own process,
first token after 100 ms); a consumer (Python grpc.aio, in the bench process) with its
own daprd, holding a streaming subscription to the response topic (`--consumer callback`:
an app-callback server instead, called once per event, as before). Each
scenario restarts the worker against a fresh fake server, warms it with one prompt,
then publishes all its prompts at once (`history: false`, one context each).

Definitions:

- *added latency per token*: arrival of a chunk at the consumer minus the moment the
  fake LLM wrote the last token that chunk carries (`time.monotonic()`, one clock).
  It includes the whole bus: worker, its daprd, Redis, the consumer's daprd and the
  consumer; the limit table's *publish -> consumer latency* is that bus alone.
- *TTFC overhead*: first chunk at the consumer minus the prompt's publish, minus the
  fake LLM's 100 ms first-token delay.
- *events/s*, *tokens/s*: all events (started, chunks, usage, completed) and distinct
  tokens received, over publish of the first prompt to arrival of the last event.
  *chunks/s streaming*: chunks over first to last chunk.
- *CPU s / 1000 tok*: utime+stime of the worker process (and of its daprd) over the
  scenario, per 1000 tokens. *RSS*: VmRSS of the worker, sampled every 50 ms; per
  stream = (peak - baseline) / streams.
- *worker publish -> ack*: the worker's own `llm_stream_publish_latency_seconds` histogram
  for chunk events (scraped from its metrics endpoint before and after), as the upper
  bound of the bucket holding p50 / p99: its side of the bus only.
- *publish -> started*: prompt published until the worker's `started` event reached the
  consumer (delivery taken up and admitted); the max is when the last stream got going.
- *source span*: first to last token written by the fake LLM.
- *CPUs busy*: CPU seconds per second of this benchmark's processes, and of everything
  else on the machine (other jobs), over the scenario.
- *the limit*: structured CloudEvents published to the worker's daprd by N concurrent
  grpc.aio publishers (no worker involved), as fast as it acknowledges them: one event
  per call, or 50 per bulk publish (what the worker does under load).
- *CPUs busy by process*: CPU seconds of each process over the scenario's wall time.
- *naive*: `bench/naive_app.py`, the obvious handler: SDK `App` (10 threads),
  `requests` to the SSE endpoint, one `DaprClient.publish_event` per token.
"""


def comparison(name: str) -> str:
    """Before the bulk-publish change (bench/results/before/) against now, per scenario."""
    runs: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for label, path in (
        ("before, callback consumer", RESULTS / "before" / f"{name}.json"),
        ("now, callback consumer", RESULTS / f"{name}-callback.json"),
        ("now, streaming consumer", RESULTS / f"{name}.json"),
    ):
        if path.exists():
            scenarios = json.loads(path.read_text())["scenarios"]
            runs.append((label, {s["name"]: s for s in scenarios}))
    if len(runs) < 2:
        return ""
    names = list(dict.fromkeys(n for _, by in runs for n in by))
    header = "| scenario | figure | " + " | ".join(label for label, _ in runs) + " |"
    rows = [header, "| --- | --- |" + " ---: |" * len(runs)]
    figures: list[tuple[str, Any]] = [
        (
            "added latency p50 / p99 (ms)",
            lambda s: f"{fmt(s['latency_ms_p50'], 1)} / {fmt(s['latency_ms_p99'], 1)}",
        ),
        ("events/s", lambda s: f"{s['events_per_s']:.0f}"),
        ("tokens/s", lambda s: f"{s['tokens_per_s']:.0f}"),
        ("TTFC overhead p50 (ms)", lambda s: fmt(s["ttfc_overhead_ms_p50"], 0)),
        ("worker CPU s / 1000 tok", lambda s: fmt(s["cpu_s_per_1000_tokens"], 3)),
        ("worker RSS peak (MB)", lambda s: fmt(s["rss_mb_peak"], 1)),
    ]
    for scenario in names:
        for figure, show in figures:
            cells = [show(by[scenario]) if scenario in by else "-" for _, by in runs]
            rows.append(f"| {scenario} | {figure} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_report() -> None:
    """BENCHMARKS.md from bench/results/{quick,full}.json, then the hand-written part."""
    sections = []
    for name in ("quick", "full"):
        path = RESULTS / f"{name}.json"
        if path.exists():
            results = json.loads(path.read_text())
            section = render(results, results["command"])
            (RESULTS / f"{name}.md").write_text(section)
            if plot(results, RESULTS / f"latency-{name}.png"):
                section += f"\n![added latency vs streams](bench/results/latency-{name}.png)\n"
            table = comparison(name)
            if table:
                section += (
                    f"\nBefore and after (profile `{name}`): the worker before bulk publishing "
                    "and its own event encoder (`bench/results/before/`), and now, with the "
                    "old app-callback consumer and with the streaming-subscription one:\n\n" + table
                )
            sections.append(section)
    kept = ""
    if REPORT.exists() and MARKER in REPORT.read_text():
        kept = REPORT.read_text().split(MARKER, 1)[1]
    REPORT.write_text(PREAMBLE + "\n## Results\n\n" + "\n".join(sections) + "\n" + MARKER + kept)
