"""Throughput and latency of the worker, against a real daprd and Redis.

Redis, the worker's daprd, the worker (`python -m worker`, OpenAI backend pointed at a
local fake SSE server in its own process) and a consumer app with its own daprd, as
deployed. The fake server stamps each token when it writes it; the consumer stamps each
event when the sidecar hands it over; both with `time.monotonic()` (one system clock).

Per scenario: added latency per token (chunk arrival minus emission of the last token
that chunk carries), time-to-first-chunk overhead, events/s, tokens/s, tokens per
chunk, worker CPU per 1000 tokens and resident memory. Two references in the same run:
the sidecar's limit (structured CloudEvents published as fast as daprd accepts them)
and a naive handler (`bench/naive_app.py`: threaded SDK App, a publish per token).

    make bench          # quick profile: 1, 10, 100 streams at 20 tok/s, one fast stream
    make bench-full     # adds 500 streams, longer streams
    DAPRD=$(bash scripts/daprd.sh) .venv/bin/python -m bench.bench --profile quick

This module is the command line; the parts, by job: `config` (profiles, pub/sub tuning),
`consumer` (the app that stamps events), `load` (prompts to the worker or the naive app),
`limit` (the sidecar's limit, no worker), `measure` (/proc and metrics meters), `figures`
(a scenario's numbers), `scenarios` (a whole run), `tables`, `targets` and `report`
(the Markdown, BENCHMARKS.md). The harness (daprd, Redis, Kafka, workers) is `testbed`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.config import KAFKA_PARTITIONS, PROFILES
from bench.report import RESULTS, plot, render, write_report
from bench.scenarios import run
from bench.tables import machine

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--pyinstrument",
        action="store_true",
        help="run the worker under pyinstrument; text profiles go to bench/results/ "
        "(more pyinstrument flags in $BENCH_PYINSTRUMENT_ARGS, e.g. --show-all)",
    )
    parser.add_argument(
        "--consumer",
        choices=("streaming", "callback"),
        default="streaming",
        help="how the consumer receives: a streaming subscription (default) or an "
        "app-callback server called once per event",
    )
    parser.add_argument(
        "--broker",
        choices=("redis", "kafka"),
        default="redis",
        help="the pub/sub under every sidecar: Redis Streams, or a local Kafka broker "
        f"(KRaft, {KAFKA_PARTITIONS} partitions a topic; three Kafka consumers a worker, "
        "prompts in bulk, as k8s/overlays/kafka deploys)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rebuild BENCHMARKS.md from bench/results/*.json",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names (e.g. worker-100x20,limit,naive, or ad hoc "
        "worker-<streams>x<tok/s>t<tokens>); default all",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON results go (default bench/results/; BENCHMARKS.md is only "
        "rewritten from there)",
    )
    args = parser.parse_args()
    if args.report_only:
        write_report()
        return
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    profile_dir = out if args.pyinstrument else None
    only = frozenset(filter(None, args.only.split(",")))
    results = asyncio.run(
        run(args.profile, PROFILES[args.profile], profile_dir, only, args.consumer, args.broker)
    )
    results["machine"] = machine()
    command = "python -m bench.bench " + " ".join(sys.argv[1:])
    results["command"] = command
    suffix = (
        ("-pyinstrument" if args.pyinstrument else "")
        + ("" if args.consumer == "streaming" else f"-{args.consumer}")
        + ("" if args.broker == "redis" else f"-{args.broker}")
        + ("-partial" if only else "")
    )
    (out / f"{args.profile}{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    main_run = not args.pyinstrument and not only and not suffix and out == RESULTS
    if main_run and plot(results, RESULTS / f"latency-{args.profile}.png"):
        results["plot"] = f"bench/results/latency-{args.profile}.png"
    text = render(results, command)
    print(text)
    if not args.no_report and main_run and args.profile != "smoke":
        (RESULTS / f"{args.profile}.md").write_text(text)
        write_report()


if __name__ == "__main__":
    main()
