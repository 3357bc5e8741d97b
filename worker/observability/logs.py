"""Logging set-up: plain text for people, one JSON object a line for log pipelines.

The worker logs ids, counts and outcomes, never prompt or reply text. Ids come from
the outside (a CloudEvent id is whatever its publisher chose), so a text log line escapes
control characters: a newline in an id cannot forge a line of its own. A line logged while
a delivery is handled carries its `trace_id` (the prompt's W3C trace id), so logs and
traces of one prompt can be joined.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from worker.observability.tracing import current_trace_id

__all__ = ["JsonFormatter", "TextFormatter", "TraceIdFilter", "configure_logging"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# C0 and C1 controls (newline, carriage return, escape, ...) as visible escapes.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class TraceIdFilter(logging.Filter):
    """Puts the current delivery's trace id on each record, as `trace_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = current_trace_id()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `trace_id=...` when the line has one.

    One record, one line: the line is escaped; a traceback follows on lines of its own.
    """

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record).translate(_ESCAPES)
        trace_id = getattr(record, "trace_id", None)
        return line if trace_id is None else f"{line} trace_id={trace_id}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Fields passed with `extra=` become top-level keys.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())  # on the handler: it sees every logger's records
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (gRPC's and asyncio's debug lines) would drown the worker's own.
    for noisy in ("asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
