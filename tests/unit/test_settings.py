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
