"""Logs: one record is one line, whatever a publisher put in its ids."""

from __future__ import annotations

import io
import json
import logging

import pytest

from worker.observability.logs import JsonFormatter, TextFormatter


def _logged(formatter: logging.Formatter, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("message %s: %s", *args)
    return stream.getvalue()


@pytest.mark.parametrize(
    "event_id",
    [
        "evt\n2026-12-06 10:00:00 INFO worker: request admin done",
        "evt\r\nforged",
        "evt\x1b[2Jclear",
        "evt\u2028line",
    ],
)
def test_a_forged_line_in_an_id_stays_on_its_own_record_s_line(event_id: str) -> None:
    written = _logged(TextFormatter("%(levelname)s %(message)s"), event_id, "invalid_prompt")
    assert written.count("\n") == 1
    assert written.endswith("invalid_prompt\n")
    assert "\x1b" not in written
    assert "\\n" in written or "\\x1b" in written or "\\u2028" in written


def test_a_traceback_still_follows_on_lines_of_its_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(message)s"))
    logger = logging.getLogger("test-logs-exc")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    assert stream.getvalue().splitlines()[:2] == ["failed", "Traceback (most recent call last):"]


def test_the_json_log_is_one_object_a_line() -> None:
    written = _logged(JsonFormatter(), "evt\nforged", "x")
    assert written.count("\n") == 1
    assert json.loads(written)["msg"] == "message evt\nforged: x"
