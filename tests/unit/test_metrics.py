"""The GenAI metrics as their definitions say, and the /metrics endpoint."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import aiohttp
import pytest

from testbed.net import free_port
from tests.fakes.ports import FakeSink
from tests.fakes.turn import run_turn
from worker.contract.envelopes import Publication
from worker.errors import LLMTimeout
from worker.llm.base import Finish, LLMRequest, StreamItem, TextDelta, Usage
from worker.observability.metrics import Metrics, serve_metrics

LABELS = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "clocked",
    "gen_ai_request_model": "clock-model",
    "llm_component": "clocked",
}


@dataclass
class Clock:
    """A perf_counter that moves only when told, so durations are exact."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ClockedBackend:
    """An LLM whose first chunk comes 1.5 s after the request, the next 0.5 s later."""

    clock: Clock
    name: str = "clocked"
    model: str | None = "clock-model"
    provider: str = "clocked"
    scrubs_pii: bool = False
    honours_max_tokens: bool = True
    script: list[StreamItem] = field(
        default_factory=lambda: [TextDelta("Hello"), TextDelta(" there"), Usage(4, 2, 6)]
    )

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        for step, item in enumerate(self.script):
            self.clock.now += 1.5 if step == 0 else 0.5
            yield item
        yield Finish("stop")


@dataclass
class SlowSink(FakeSink):
    """Each publish acknowledged 10 s later (on the clock)."""

    clock: Clock = field(default_factory=Clock)

    async def publish(self, publication: Publication, *, call_timeout: float | None = None) -> None:
        await super().publish(publication, call_timeout=call_timeout)
        self.clock.now += 10


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {**LABELS, **labels})
    assert value is not None, f"no sample {name} {labels}"
    return value


async def test_time_to_first_chunk_ends_when_the_llm_sends_it_not_when_it_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    metrics = Metrics()
    result = await run_turn(SlowSink(clock=clock), ClockedBackend(clock), metrics=metrics)
    assert result.status == "completed"
    name = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert _sample(metrics, f"{name}_count") == 1
    assert _sample(metrics, f"{name}_sum") == 1.5  # no publish acknowledgement in it
    duration = "gen_ai_client_operation_duration_seconds"
    assert _sample(metrics, f"{duration}_count", error_type="") == 1
    token_usage = "gen_ai_client_token_usage"
    assert _sample(metrics, f"{token_usage}_sum", gen_ai_token_type="input") == 4
    assert _sample(metrics, f"{token_usage}_sum", gen_ai_token_type="output") == 2


@dataclass
class TimingOutBackend(ClockedBackend):
    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        raise LLMTimeout("no reply")
        yield Finish("stop")  # never reached: makes this an async generator


async def test_a_failed_call_is_counted_with_its_error_type() -> None:
    metrics = Metrics()
    backend = TimingOutBackend(Clock())
    result = await run_turn(FakeSink(), backend, metrics=metrics)
    assert result.status == "failed"
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert _sample(metrics, duration, error_type="timeout") == 1
    ttfc = "gen_ai_client_operation_time_to_first_chunk_seconds_count"
    assert metrics.registry.get_sample_value(ttfc, LABELS) is None  # no chunk, no sample


async def test_the_endpoint_serves_openmetrics_and_gzip_on_the_given_address() -> None:
    metrics = Metrics()
    metrics.in_flight.set(3)
    port = free_port()
    async with (
        serve_metrics(metrics, "127.0.0.1", port),
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        url = f"http://127.0.0.1:{port}/metrics"
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as plain:
            assert plain.status == 200
            assert plain.headers["Content-Type"].startswith("text/plain; version=")
            assert "llm_stream_in_flight_streams 3.0" in await plain.text()
        openmetrics = {
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "identity",
        }
        async with session.get(url, headers=openmetrics) as om:
            assert om.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await om.read()).rstrip().endswith(b"# EOF")
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as zipped:
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert b"llm_stream_in_flight_streams 3.0" in gzip.decompress(await zipped.read())
