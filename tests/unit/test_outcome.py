"""Outcomes: what Dapr is answered, and that no message is retried forever by our fault."""

from __future__ import annotations

import pytest

from worker.errors import (
    CallRefused,
    InvalidPrompt,
    LLMUnavailable,
    PoisonPill,
    SidecarError,
    UnknownComponent,
    WaitedTooLong,
)
from worker.pipeline.outcome import Outcome, OutcomePolicy


def test_success_and_the_errors_no_redelivery_can_fix() -> None:
    policy = OutcomePolicy()
    assert policy.decide("m", None) is Outcome.SUCCESS
    for error in (InvalidPrompt("x"), UnknownComponent("x"), PoisonPill("x")):
        assert policy.decide("m", error) is Outcome.DROP


@pytest.mark.parametrize("error", [SidecarError("down"), WaitedTooLong("busy")])
def test_trouble_that_is_not_the_message_s_fault_is_retried_without_end(
    error: Exception,
) -> None:
    policy = OutcomePolicy(max_strikes=3)
    assert all(policy.decide("m", error) is Outcome.RETRY for _ in range(50))
    assert not policy.struck_out("m")


@pytest.mark.parametrize("error", [RecursionError(), KeyError("x"), CallRefused("bad header")])
def test_an_unexpected_error_strikes_out_on_the_third_delivery(error: Exception) -> None:
    policy = OutcomePolicy(max_strikes=3)
    assert policy.decide("m", error) is Outcome.RETRY
    assert not policy.struck_out("m")
    assert policy.decide("m", error) is Outcome.RETRY
    assert policy.struck_out("m")  # the next delivery is answered `failed`, then dropped
    assert policy.decide("m", error) is Outcome.DROP  # and if even that fails, dropped
    assert not policy.struck_out("m")


def test_strikes_are_per_message_and_a_success_clears_them() -> None:
    policy = OutcomePolicy(max_strikes=2)
    policy.decide("a", KeyError())
    assert policy.struck_out("a")
    assert not policy.struck_out("b")
    policy.decide("a", None)
    assert not policy.struck_out("a")


def test_strikes_are_remembered_for_a_bounded_number_of_messages() -> None:
    policy = OutcomePolicy(max_strikes=2, remembered=2)
    for message in ("a", "b", "c"):
        policy.decide(message, KeyError())
    assert not policy.struck_out("a")
    assert policy.struck_out("b")
    assert policy.struck_out("c")


def test_a_retryable_llm_error_outside_a_turn_is_retried() -> None:
    assert OutcomePolicy().decide("m", LLMUnavailable("429")) is Outcome.RETRY
