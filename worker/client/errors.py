"""What the client raises: a tree of its own, apart from the worker's `WorkerError`.

    ClientError                     internal             (the client's own root)
    ├── InvalidRequest (ValueError) invalid_prompt       caught before publishing
    ├── SidecarUnavailable          sidecar_unavailable  (retryable)
    ├── MalformedEvent              internal             a response event lacks fields
    ├── GenerationFailed            the `failed` event's code (and its retryable)
    ├── GenerationCancelled         cancelled
    └── GenerationTimeout           timeout              (retryable)

Each carries a `code`, a `message` and `retryable`, so callers can decide whether to
try again without parsing messages; `GenerationFailed` carries the ones the worker
reported (contract section 5).
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationTimeout",
    "InvalidRequest",
    "MalformedEvent",
    "SidecarUnavailable",
]


class ClientError(Exception):
    """Root of every error the client raises on purpose."""

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ClientError, ValueError):
    """The prompt would break the contract; caught before anything is published."""

    code = "invalid_prompt"


class SidecarUnavailable(ClientError):
    """The Dapr sidecar could not be reached, refused a call, or dropped the subscription."""

    code = "sidecar_unavailable"
    retryable = True


class MalformedEvent(ClientError):
    """A response event lacks the fields every event's data must carry."""


class GenerationFailed(ClientError):
    """The worker answered the request with a `failed` event."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retryable: bool,
        request_id: str,
        context_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.request_id = request_id
        self.context_id = context_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class GenerationCancelled(ClientError):
    """The turn was cancelled (contract section 4) before its reply was complete."""

    code = "cancelled"

    def __init__(self, reason: str, *, request_id: str, context_id: str | None) -> None:
        super().__init__(f"cancelled: {reason}")
        self.reason = reason
        self.request_id = request_id
        self.context_id = context_id


class GenerationTimeout(ClientError):
    """No event of the request arrived within the timeout."""

    code = "timeout"
    retryable = True

    def __init__(self, message: str, *, request_id: str, started: bool) -> None:
        super().__init__(message)
        self.request_id = request_id
        # False: not even `started` arrived (is the worker running?).
        self.started = started
