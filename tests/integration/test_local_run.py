"""`make run` and `make consume` as a newcomer uses them: the real scripts, real daprd and Redis.

What failed with the in-memory `make run` (issue 14): a plain Dapr client that
subscribes to `responses` and publishes several prompts before reading deadlocked it,
and no second app could consume. On the local Redis both work, replies and history
survive a restart, and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2_grpc, pubsub_pb2

from testbed.local_run import LocalRun, start_make_consume, start_make_run
from testbed.net import wait_until

pytestmark = pytest.mark.dapr

TERMINAL = {"completed", "failed", "cancelled"}
SUCCESS = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus.SUCCESS
# daprd's log lines carry level=...; the worker's and the example's name their level.
ERROR_LINE = re.compile(r"level=(error|fatal)|\b(ERROR|CRITICAL)\b")


@pytest.fixture
def local_runs(request: pytest.FixtureRequest) -> Iterator[list[LocalRun]]:
    """What a test started; killed afterwards, logs printed when the test failed."""
    runs: list[LocalRun] = []
    yield runs
    report = getattr(request.node, "report_call", None)
    for run in reversed(runs):
        if report is not None and report.failed:
            print(f"\n----- {run.script} -----\n{run.logs()}")
        run.kill()


@pytest.fixture
def make_run(local_runs: list[LocalRun], tmp_path: Path) -> Callable[..., LocalRun]:
    def start(*, broker: str = "redis") -> LocalRun:
        run = start_make_run(tmp_path / f"run{len(local_runs)}", tmp_path / "cache", broker=broker)
        local_runs.append(run)
        return run

    return start


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ERROR_LINE.search(line)]


def stop_like_ctrl_c(run: LocalRun) -> None:
    """Ctrl-C ends the script without complaint and takes everything it started with it;
    from start to stop, no error line."""
    assert run.started, run.logs()  # the processes it started were found
    assert run.interrupt() == 0, run.logs()
    assert run.still_running() == [], run.logs()
    assert error_lines(run.logs()) == [], run.logs()


def prompt(text: str, *, context_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "messages": [{"role": "user", "content": text}],
    }
    if context_id is not None:
        body["context_id"] = context_id
    return body


@dataclass
class Replies:
    """Every response event a plain subscriber read, by request id."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, event_type: str, data: dict[str, Any]) -> None:
        kind = event_type.removeprefix("llm.stream.").removesuffix(".v1")
        self.events.setdefault(data["request_id"], []).append({"kind": kind, **data})

    def finished(self, request_id: str) -> bool:
        """The terminal event and every event before it (`seq` 1..n) arrived."""
        events = self.events.get(request_id, [])
        ends = [e["seq"] for e in events if e["kind"] in TERMINAL]
        return bool(ends) and {e["seq"] for e in events} == set(range(1, max(ends) + 1))

    def text(self, request_id: str) -> str:
        chunks = sorted(
            (e for e in self.events[request_id] if e["kind"] == "chunk"), key=lambda e: e["index"]
        )
        return "".join(e["text"] for e in chunks)

    def of_kind(self, request_id: str, kind: str) -> dict[str, Any]:
        (event,) = [e for e in self.events[request_id] if e["kind"] == kind]
        return event


async def publish_then_read(run: LocalRun, prompts: list[dict[str, Any]]) -> Replies:
    """The issue's plain client, on raw gRPC: subscribe, publish every prompt, then read.

    Each event is acknowledged (awaited) as it is read, and the client half-closes and
    waits for the sidecar to end the stream: a client that cancels the stream with an
    acknowledgement still unsent leaves the sidecar redelivering that event to nobody.
    """
    replies = Replies()
    wanted = {body["request_id"] for body in prompts}
    address = f"127.0.0.1:{run.ports['DAPR_GRPC_PORT']}"
    async with grpc.aio.insecure_channel(address) as channel, asyncio.timeout(90):
        stub = dapr_pb2_grpc.DaprStub(channel)
        call = stub.SubscribeTopicEventsAlpha1()
        await call.write(
            pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                    pubsub_name="pubsub", topic="responses"
                )
            )
        )
        first = await call.read()
        assert first.HasField("initial_response")
        for body in prompts:
            await stub.PublishEvent(
                pubsub_pb2.PublishEventRequest(
                    pubsub_name="pubsub",
                    topic="prompts",
                    data=json.dumps(body).encode(),
                    data_content_type="application/json",
                )
            )
        while not all(replies.finished(request_id) for request_id in wanted):
            response = await call.read()
            assert response is not grpc.aio.EOF
            event = response.event_message
            await call.write(
                pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                    event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                        id=event.id,
                        status=appcallback_pb2.TopicEventResponse(status=SUCCESS),
                    )
                )
            )
            data = json.loads(event.data)
            if data.get("request_id") in wanted:
                replies.add(event.type, data)
        await call.done_writing()
        # Every event was read: daprd 1.18 ends the half-closed stream with this status.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        assert (ended.value.code(), ended.value.details()) == (grpc.StatusCode.UNKNOWN, "EOF")
    return replies


async def test_a_plain_client_publishes_several_prompts_then_reads_every_reply(
    make_run: Callable[..., LocalRun],
) -> None:
    run = make_run()
    prompts = [prompt(f"prompt number {n} for the plain client") for n in range(5)]

    replies = await publish_then_read(run, prompts)

    for body in prompts:
        request_id = body["request_id"]
        assert replies.of_kind(request_id, "completed")["finish_reason"] == "stop"
        # The echo backend answers with the last message, word by word.
        assert replies.text(request_id) == body["messages"][0]["content"]
    stop_like_ctrl_c(run)


def redis_cli(port: int, *command: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *command], check=True, capture_output=True, text=True
    ).stdout


async def test_replies_and_history_survive_a_restart_of_make_run(
    make_run: Callable[..., LocalRun],
) -> None:
    context_id = f"ctx-{uuid.uuid4().hex[:12]}"
    first = prompt("the first turn of a conversation that outlives make run", context_id=context_id)
    run = make_run()
    await publish_then_read(run, [first])
    stop_like_ctrl_c(run)

    run = make_run()
    again = prompt("and then", context_id=context_id)
    fresh = prompt("and then")
    replies = await publish_then_read(run, [again, fresh])

    # The stored turn is prepended: the same words cost more prompt tokens in the old
    # conversation than in a fresh one.
    assert (
        replies.of_kind(again["request_id"], "usage")["prompt_tokens"]
        > replies.of_kind(fresh["request_id"], "usage")["prompt_tokens"]
    )
    # The first run's reply events are still in the response stream.
    assert first["request_id"] in redis_cli(
        run.ports["REDIS_PORT"], "XRANGE", "responses", "-", "+"
    )
    stop_like_ctrl_c(run)


def publish_over_http(run: LocalRun, body: dict[str, Any]) -> None:
    """What the README shows with curl: any Dapr app publishing through its sidecar."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{run.ports['DAPR_HTTP_PORT']}/v1.0/publish/pubsub/prompts",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


async def test_make_consume_prints_every_reply_as_a_second_dapr_app(
    make_run: Callable[..., LocalRun], local_runs: list[LocalRun], tmp_path: Path
) -> None:
    run = make_run()
    consumer = start_make_consume(tmp_path / "consume", tmp_path / "cache", "--follow")
    local_runs.append(consumer)
    prompts = [prompt(f"downstream reads reply {n}") for n in range(3)]

    for body in prompts:
        await asyncio.to_thread(publish_over_http, run, body)

    def printed(body: dict[str, Any]) -> bool:
        # "[<request id>] context <id>, <n> tokens (estimated):" then the reply.
        pattern = rf"\[{body['request_id']}\] context \S+, \d+ tokens \(estimated\):\n"
        content = re.escape(body["messages"][0]["content"])
        return re.search(pattern + content, consumer.logs()) is not None

    await asyncio.to_thread(
        wait_until,
        lambda: all(printed(body) for body in prompts),
        timeout=90,
        what="make consume to print every reply",
        on_timeout=consumer.logs,
    )
    for body in prompts:
        # --follow (what `make consume` passes): the stream as it arrived, chunk by chunk.
        request_id = re.escape(body["request_id"])
        assert re.search(rf"\[{request_id}\] started: context \S+, attempt 1\n", consumer.logs())
        chunks = re.findall(rf"\[{request_id}\] chunk \d+: (.*)\n", consumer.logs())
        assert (
            "".join(ast.literal_eval(chunk) for chunk in chunks) == body["messages"][0]["content"]
        )
    stop_like_ctrl_c(consumer)
    stop_like_ctrl_c(run)


async def test_make_run_in_memory_stays_available(
    make_run: Callable[..., LocalRun],
) -> None:
    run = make_run(broker="memory")
    body = prompt("in memory, one prompt at a time")

    replies = await publish_then_read(run, [body])

    assert replies.text(body["request_id"]) == body["messages"][0]["content"]
    assert "broker: memory" in run.logs()
    stop_like_ctrl_c(run)
