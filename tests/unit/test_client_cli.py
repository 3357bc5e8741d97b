"""`llm-stream`: what it prints, where, and its exit status (against a fake sidecar)."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from importlib.metadata import entry_points
from typing import Any

import pytest

from tests.unit.test_client_async import FakeSidecar, turn
from worker.client.cli import run
from worker.client.progress import Progress
from worker.contract.envelopes import InboundMessage


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _run(*argv: str, sidecar: FakeSidecar | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(["ask", *argv], out, err, transport=sidecar or FakeSidecar())
    return code, out.getvalue(), err.getvalue()


async def test_prints_the_reply_then_timings_and_usage_on_stderr() -> None:
    code, out, err = await _run("Tell me a story")
    assert code == 0
    assert out == "Tell me a story\n"
    assert err.startswith("[context ctx-1 | first chunk ")
    assert "| total " in err
    assert "| tokens 4 prompt + 4 completion = 8 (provider)]" in err
    assert err.count("\n") == 1


async def test_options_reach_the_prompt() -> None:
    sidecar = FakeSidecar()
    await _run(
        "hi",
        "--context-id",
        "ctx-9",
        "--llm-component",
        "openai",
        "--temperature",
        "0.2",
        "--max-tokens",
        "5",
        "--scrub-pii",
        sidecar=sidecar,
    )
    prompt = sidecar.published[0]
    assert (prompt["context_id"], prompt["llm_component"]) == ("ctx-9", "openai")
    assert (prompt["temperature"], prompt["max_tokens"], prompt["scrub_pii"]) == (0.2, 5, True)


async def test_no_stream_prints_the_whole_reply() -> None:
    code, out, err = await _run("--no-stream", "all at once")
    assert (code, out) == (0, "all at once\n")
    assert "first chunk" not in err
    assert "total" in err


async def test_json_prints_the_raw_events_one_per_line() -> None:
    code, out, _ = await _run("--json", "a b")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [line["type"].split(".")[2] for line in lines] == [
        "started",
        "chunk",
        "chunk",
        "usage",
        "completed",
    ]
    assert lines[1]["data"]["text"] == "a"
    assert lines[0]["id"].endswith(":1:1")


async def test_a_failed_turn_prints_one_line_and_exits_1() -> None:
    def failing(prompt: dict[str, Any]) -> list[InboundMessage]:
        return turn(
            prompt["request_id"],
            [],
            terminal="failed",
            code="unknown_component",
            message="no LLM component named 'gpt-9'",
        )

    code, out, err = await _run("x", sidecar=FakeSidecar(failing))
    assert code == 1
    assert out == ""
    assert err == "llm-stream: failed: unknown_component: no LLM component named 'gpt-9'\n"
    code, out, err = await _run("--json", "x", sidecar=FakeSidecar(failing))
    assert code == 1
    assert "unknown_component" in out
    assert err.startswith("llm-stream: failed: unknown_component")


async def test_a_restart_is_announced_and_the_reply_starts_over() -> None:
    def restarting(prompt: dict[str, Any]) -> list[InboundMessage]:
        request_id = prompt["request_id"]
        return [*turn(request_id, ["Hal"], terminal=None), *turn(request_id, ["Hello"], attempt=2)]

    code, out, err = await _run("x", sidecar=FakeSidecar(restarting))
    assert code == 0
    assert out == "Hal\nHello\n"
    assert "restarted" in err


async def test_a_timeout_is_one_line_and_exit_1() -> None:
    code, _, err = await _run("--timeout", "0.05", "x", sidecar=FakeSidecar(answer=None))
    assert code == 1
    assert err.startswith("llm-stream: error: no event of request client-")


async def test_usage_errors_exit_2_without_touching_the_sidecar() -> None:
    sidecar = FakeSidecar()
    code, _, err = await _run("--temperature", "7", "x", sidecar=sidecar)
    assert code == 2
    assert err == "llm-stream: error: temperature: Input should be less than or equal to 2\n"
    assert sidecar.calls == []
    out, err_stream = io.StringIO(), io.StringIO()
    assert await run([], out, err_stream) == 2
    assert "a command is required" in err_stream.getvalue()
    with pytest.raises(SystemExit) as exited:
        await run(["ask"], out, err_stream)
    assert exited.value.code == 2


async def test_an_unreachable_sidecar_is_one_line_and_exit_1() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out, err = io.StringIO(), io.StringIO()
    code = await run(
        ["ask", "x", "--address", f"127.0.0.1:{port}", "--connect-timeout", "0.2"], out, err
    )
    assert code == 1
    assert err.getvalue() == (
        f"llm-stream: error: cannot reach the Dapr sidecar at 127.0.0.1:{port} within 0.2 s\n"
    )


async def test_progress_off_a_terminal_is_one_line_after_a_while() -> None:
    stream = io.StringIO()
    async with Progress(stream, "waiting for the reply", after=0.05):
        await asyncio.sleep(0.2)
    assert stream.getvalue() == "llm-stream: waiting for the reply...\n"
    quick = io.StringIO()
    async with Progress(quick, "waiting", after=5):
        pass
    assert quick.getvalue() == ""


async def test_progress_on_a_terminal_spins_then_clears_its_line() -> None:
    terminal = _Terminal()
    async with Progress(terminal, "waiting", after=0.01, interval=0.01) as progress:
        await asyncio.sleep(0.1)
        progress.stop()
        drawn = terminal.getvalue()
        await asyncio.sleep(0.05)
        assert terminal.getvalue() == drawn
    assert "\r| waiting (0 s)" in drawn
    assert drawn.endswith("\r\033[K")


def test_llm_stream_is_an_installed_command() -> None:
    (script,) = entry_points(group="console_scripts", name="llm-stream")
    assert script.value == "worker.client.cli:main"
