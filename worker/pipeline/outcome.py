"""What the worker answers Dapr for a message: decided here, and only here."""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from worker.errors import InvalidPrompt, PoisonPill, SidecarError, UnknownComponent, WorkerError

__all__ = ["Outcome", "OutcomePolicy", "unfinished"]


class Outcome(Enum):
    SUCCESS = "success"  # handled (or already handled): acknowledge
    RETRY = "retry"  # not handled yet: Dapr delivers it again (or dead-letters it)
    DROP = "drop"  # can never be handled: straight to the dead-letter topic


def unfinished() -> Outcome:
    """For a delivery this replica did not see through: refused or cut short while it
    shuts down, or a handler that broke before deciding. Nothing of it may be lost, so
    Dapr delivers it again (to this replica once restarted, or to another)."""
    return Outcome.RETRY


class OutcomePolicy:
    """The answer for a message whose handling ended with `error` (None: it succeeded).

    - SUCCESS once a turn reached its terminal event, even a `failed` one: the consumer
      has been told, and redelivery would only repeat the failure.
    - DROP for what no redelivery can fix (an invalid prompt, an unknown component, a
      poison pill): it lands on the dead-letter topic, nothing is lost.
    - RETRY for what could not reach a terminal event through no fault of the message
      (the sidecar refused our publishes, the context stayed busy): nothing accepted is
      lost, and it is delivered again for as long as it takes.
    - Anything else is a fault this message brings out in us (a bug, a request gRPC
      refuses). It is retried in case it was passing; on its `max_strikes`-th delivery
      it has struck out (`struck_out`): the handler answers it with a `failed` event and
      it is dropped (dropped too if even that fails). Strikes are counted per replica by
      message id, so a poison pill is delivered a bounded number of times, never forever.
    """

    def __init__(self, *, max_strikes: int = 3, remembered: int = 10_000) -> None:
        if max_strikes < 1:
            raise ValueError("max_strikes must be at least 1")
        self._max_strikes = max_strikes
        self._remembered = remembered
        self._strikes: OrderedDict[str, int] = OrderedDict()

    def struck_out(self, message_id: str) -> bool:
        """Whether this message failed unexpectedly too often to be tried again."""
        return self._strikes.get(message_id, 0) >= self._max_strikes - 1

    def decide(self, message_id: str, error: BaseException | None) -> Outcome:
        if error is None:
            self._strikes.pop(message_id, None)
            return Outcome.SUCCESS
        if isinstance(error, InvalidPrompt | UnknownComponent | PoisonPill):
            self._strikes.pop(message_id, None)
            return Outcome.DROP
        if isinstance(error, SidecarError) or (isinstance(error, WorkerError) and error.retryable):
            return Outcome.RETRY
        strikes = self._strikes.pop(message_id, 0) + 1
        if strikes >= self._max_strikes:
            return Outcome.DROP  # even its `failed` answer failed: drop it all the same
        self._strikes[message_id] = strikes
        while len(self._strikes) > self._remembered:
            self._strikes.popitem(last=False)
        return Outcome.RETRY
