"""Logging set-up: plain text for people, one JSON object a line for log pipelines.

The worker logs ids, counts and outcomes, never prompt or reply text: log records carry
no content unless `WORKER_LOG_CONTENT=true`, for debugging only. A line logged while a
delivery is handled carries its `trace_id` (the prompt's W3C trace id), so logs and
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


class TraceIdFilter(logging.Filter):
    """Puts the current delivery's trace id on each record, as `trace_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = current_trace_id()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, then `trace_id=...` when the line has one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
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
