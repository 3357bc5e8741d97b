"""What the worker answers Dapr for a message: decided here, and only here."""

from __future__ import annotations

from enum import Enum

from worker.errors import InvalidPrompt, UnknownComponent

__all__ = ["Outcome", "outcome_for"]


class Outcome(Enum):
    SUCCESS = "success"  # handled (or already handled): acknowledge
    RETRY = "retry"  # not handled yet: Dapr delivers it again (or dead-letters it)
    DROP = "drop"  # can never be handled: straight to the dead-letter topic


def outcome_for(error: BaseException | None) -> Outcome:
    """The answer for a message whose handling ended with `error` (None: it succeeded).

    A turn that reached its terminal event is SUCCESS even when that event is `failed`:
    the consumer has been told, and redelivery would only repeat the failure. What
    could not reach a terminal event (the sidecar refused our publishes, shutdown cut
    it short) is RETRY so nothing accepted is lost. What no redelivery can fix (an invalid
    prompt, an unknown component) is DROP: it lands on the dead-letter topic.
    """
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, InvalidPrompt | UnknownComponent):
        return Outcome.DROP
    # Sidecar failures, shutdown and anything unexpected: keep the message.
    return Outcome.RETRY
