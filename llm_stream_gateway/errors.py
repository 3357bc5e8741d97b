"""Errors as OpenAI-style objects, `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

__all__ = [
    "GatewayError",
    "GatewayTimeout",
    "InvalidRequest",
    "SidecarUnavailable",
    "StreamNotFound",
    "WorkerFailed",
    "error_body",
]


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class StreamNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "stream_not_found"


class WorkerFailed(GatewayError):
    """The worker answered with `failed`; `status` follows its failure code."""

    status = 502

    def __init__(self, message: str, *, code: str, status: int = 502) -> None:
        super().__init__(message, code=code)
        self.status = status
        if status in (400, 404):
            self.type = "invalid_request_error"


class SidecarUnavailable(GatewayError):
    status = 503
    code = "sidecar_unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    code = "timeout"


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
