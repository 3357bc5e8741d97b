"""The worker's metrics, exposed for Prometheus.

Names follow the OpenTelemetry GenAI semantic conventions where they define one
(`gen_ai.client.operation.duration`, `gen_ai.client.token.usage`,
`gen_ai.client.operation.time_to_first_chunk`), in Prometheus form (dots to
underscores, unit suffix); the rest are the worker's own, prefixed `llm_stream_`.
One `Metrics` object per worker, passed down: no global registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

__all__ = ["Metrics", "serve_metrics"]

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DURATION = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.time_to_first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "From the LLM call's start to the first chunk event acknowledged by the sidecar.",
            ["gen_ai_request_model", "llm_component"],
            buckets=(*_LATENCY, 30),
            registry=r,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "A whole turn, from the LLM call's start to its terminal event.",
            ["gen_ai_operation_name", "gen_ai_request_model", "llm_component", "outcome"],
            buckets=_DURATION,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per turn, by type (input, output), as reported or estimated.",
            ["gen_ai_token_type", "gen_ai_request_model", "llm_component"],
            buckets=_TOKENS,
            registry=r,
        )
        self.in_flight = Gauge(
            "llm_stream_in_flight_streams", "Deliveries being handled now.", registry=r
        )
        self.publish_latency = Histogram(
            "llm_stream_publish_latency_seconds",
            "One event's publish, until the sidecar acknowledged it.",
            ["event_type"],
            buckets=_LATENCY,
            registry=r,
        )
        self.deltas_per_chunk = Histogram(
            "llm_stream_coalesced_deltas_per_chunk",
            "LLM deltas merged into one chunk event while the previous publish was in flight.",
            buckets=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89),
            registry=r,
        )
        self.publish_batch_size = Histogram(
            "llm_stream_publish_batch_size",
            "Events per publish call to the sidecar (more than one: a bulk publish).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.publish_retries = Counter(
            "llm_stream_publish_retries", "Publishes tried again after a failure.", registry=r
        )
        self.messages = Counter(
            "llm_stream_messages",
            "Deliveries answered, by topic and outcome (success, retry, drop).",
            ["topic", "outcome"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@asynccontextmanager
async def serve_metrics(metrics: Metrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on the event loop while the block runs."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
