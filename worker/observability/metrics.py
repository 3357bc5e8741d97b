"""The worker's metrics, exposed for Prometheus.

Names and attributes follow the OpenTelemetry GenAI semantic conventions (v1.41.0)
where they define one (`gen_ai.client.operation.duration`, `gen_ai.client.token.usage`,
`gen_ai.client.operation.time_to_first_chunk`, with `gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model`, `error.type`), in Prometheus form
(dots to underscores, unit suffix), plus the worker's `llm_component`; the rest are the
worker's own, prefixed `llm_stream_`. One `Metrics` object per worker, passed down: no
global registry. Served by prometheus_client's own aiohttp handler (text or
OpenMetrics as the scraper asks, gzip when it accepts it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.process_collector import ProcessCollector

from worker.llm.base import LLMBackend, Usage

__all__ = ["Metrics", "serve_metrics"]

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# The boundaries the conventions advise for gen_ai.client.operation.duration and for
# gen_ai.client.token.usage.
_DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
# The conventions' attributes of a GenAI client operation, and the worker's component name.
_GEN_AI = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "llm_component"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.time_to_first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "From the LLM request to the first chunk received from the LLM.",
            _GEN_AI,
            buckets=(*_LATENCY, 30),
            registry=r,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "One LLM call, from the request to the end of its reply (error_type when it failed).",
            [*_GEN_AI, "error_type"],
            buckets=_DURATION,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per LLM call, by type (input, output), as reported or estimated.",
            [*_GEN_AI, "gen_ai_token_type"],
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
        self._publish_latency_by_kind: dict[str, Histogram] = {}
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

    def observe_publish(self, kind: str, seconds: float) -> None:
        """One event's publish; its labelled child looked up once a kind (the hot path)."""
        child = self._publish_latency_by_kind.get(kind)
        if child is None:
            child = self._publish_latency_by_kind[kind] = self.publish_latency.labels(kind)
        child.observe(seconds)

    def observe_operation(
        self,
        backend: LLMBackend,
        *,
        duration: float,
        time_to_first_chunk: float | None,
        usage: Usage,
        error_type: str | None,
    ) -> None:
        """One chat call to `backend`: its GenAI client metrics."""
        labels = ("chat", backend.provider, backend.model or "", backend.name)
        if time_to_first_chunk is not None:
            self.time_to_first_chunk.labels(*labels).observe(time_to_first_chunk)
        self.operation_duration.labels(*labels, error_type or "").observe(duration)
        self.token_usage.labels(*labels, "input").observe(usage.prompt_tokens)
        self.token_usage.labels(*labels, "output").observe(usage.completion_tokens)


@asynccontextmanager
async def serve_metrics(metrics: Metrics, host: str, port: int) -> AsyncIterator[None]:
    """Serve `/metrics` on the event loop while the block runs."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
