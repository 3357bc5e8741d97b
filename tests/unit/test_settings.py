"""Settings fail fast, naming the bad value; the publishing knobs' defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.settings import Settings


def test_publishing_defaults() -> None:
    settings = Settings()
    assert settings.publish_max_in_flight == 4
    assert settings.publish_max_batch == 100


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKER_PUBLISH_MAX_IN_FLIGHT", "0"),
        ("WORKER_PUBLISH_MAX_BATCH", "0"),
        ("WORKER_PUBLISH_MAX_BATCH", "5000"),
        ("WORKER_PUBLISH_MAX_IN_FLIGHT", "many"),
    ],
)
def test_a_bad_publishing_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert variable.removeprefix("WORKER_").lower() in str(raised.value)


def test_prompts_in_bulk_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis delivers concurrently without it; on Kafka the deployment turns it on.
    assert not Settings().bulk_subscribe.enabled
    monkeypatch.setenv("WORKER_BULK_SUBSCRIBE__ENABLED", "true")
    monkeypatch.setenv("WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS", "250")
    bulk = Settings().bulk_subscribe
    assert (bulk.enabled, bulk.max_messages, bulk.max_await_ms) == (True, 100, 250)
