"""The worker's exceptions: one root, each carrying the contract's failure code.

`code` and `retryable` are what a `failed` event reports; the pipeline decides the
message outcome (SUCCESS / RETRY / DROP) from the exception type in one place
(`worker.pipeline.outcome`).

    WorkerError                 internal
    ├── InvalidPrompt           invalid_prompt      -> DROP
    ├── UnknownComponent        unknown_component   -> DROP
    ├── PoisonPill              internal            -> DROP
    ├── LLMUnavailable          llm_unavailable     (retryable)
    ├── LLMError                llm_error
    ├── LLMTimeout              timeout             (retryable)
    ├── CallRefused             internal            (gRPC would not send the call)
    ├── WaitedTooLong           internal            -> RETRY (the context stayed busy)
    ├── LeaseLost               internal            -> RETRY (the lease could not be confirmed)
    ├── ShuttingDown            internal            -> RETRY (never started: shutdown began)
    └── SidecarError            internal            -> RETRY (retryable)
        └── EtagMismatch        (a first-write-wins race lost)
"""

from __future__ import annotations

__all__ = [
    "CallRefused",
    "EtagMismatch",
    "InvalidPrompt",
    "LLMError",
    "LLMTimeout",
    "LLMUnavailable",
    "LeaseLost",
    "PoisonPill",
    "ShuttingDown",
    "SidecarError",
    "UnknownComponent",
    "WaitedTooLong",
    "WorkerError",
]


class WorkerError(Exception):
    """Root of every error the worker raises on purpose."""

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPrompt(WorkerError):
    """The prompt breaks the contract; redelivering it cannot help."""

    code = "invalid_prompt"


class UnknownComponent(WorkerError):
    """The prompt names an LLM component this worker does not have."""

    code = "unknown_component"


class PoisonPill(WorkerError):
    """A message that failed unexpectedly on every delivery: answered `failed`, then dropped."""


class WaitedTooLong(WorkerError):
    """Another holder kept the context busy beyond our patience: Dapr redelivers later."""

    retryable = True


class LeaseLost(WorkerError):
    """This attempt can no longer confirm its lease: it must not publish anything more."""

    retryable = True


class ShuttingDown(WorkerError):
    """Queued for a slot when shutdown began: never started, Dapr delivers it again."""

    retryable = True


class LLMUnavailable(WorkerError):
    """The LLM could not be reached or is overloaded (connection, 429, 5xx)."""

    code = "llm_unavailable"
    retryable = True


class LLMError(WorkerError):
    """The LLM answered with an error or with something we cannot read."""

    code = "llm_error"


class LLMTimeout(WorkerError):
    """The LLM stopped sending before the reply was complete."""

    code = "timeout"
    retryable = True


class SidecarError(WorkerError):
    """The Dapr sidecar refused or did not answer a call (publish, state, conversation)."""

    retryable = True


class CallRefused(WorkerError):
    """gRPC refused to send a call at all (a malformed request): sending it again cannot help."""


class EtagMismatch(SidecarError):
    """A state write lost a first-write-wins race: someone else changed the key."""

    retryable = False
