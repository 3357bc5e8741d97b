"""Settings fail fast, naming the bad value; the publishing knobs' defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from worker.main import subscriptions
from worker.settings import Settings


def test_publishing_defaults() -> None:
    settings = Settings()
    assert settings.publish_max_in_flight == 4
    assert settings.publish_max_batch == 100
    assert settings.publish_protocol == "auto"
    assert settings.dapr_http_port == 3500


def test_the_sidecars_ports_are_read_from_the_names_dapr_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAPR_HTTP_PORT", "3601")
    monkeypatch.setenv("DAPR_GRPC_PORT", "50101")
    monkeypatch.setenv("WORKER_PUBLISH_PROTOCOL", "grpc")
    settings = Settings()
    assert (settings.dapr_http_port, settings.dapr_grpc_port) == (3601, 50101)
    assert settings.publish_protocol == "grpc"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKER_PUBLISH_MAX_IN_FLIGHT", "0"),
        ("WORKER_PUBLISH_MAX_BATCH", "0"),
        ("WORKER_PUBLISH_MAX_BATCH", "5000"),
        ("WORKER_PUBLISH_MAX_IN_FLIGHT", "many"),
        ("WORKER_PUBLISH_PROTOCOL", "amqp"),
    ],
)
def test_a_bad_publishing_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert variable.removeprefix("WORKER_").lower() in str(raised.value)


KEY = "sk-proj-Zq8xW2vN4mK7pL1rT9yB3cF6hJ0dG5sA8eQ"


@pytest.mark.parametrize(
    "openai",
    [
        # A missing model: pydantic's own message would quote the entry, key and all.
        f'[{{"name": "o", "base_url": "http://llm", "api_key": "{KEY}"}}]',
        # Not JSON at all.
        f'[{{"name": "o", "base_url": "http://llm", "api_key": "{KEY}"',
    ],
)
def test_a_configuration_error_names_the_setting_and_never_echoes_the_key(openai: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "DAPR_"))}
    result = subprocess.run(
        [sys.executable, "-m", "worker"],
        env={**env, "WORKER_OPENAI": openai},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "openai" in result.stderr
    # Not even a piece of it: the issue saw 22 of the key's 47 characters.
    assert not any(KEY[i : i + 6] in result.stderr for i in range(len(KEY) - 5))


def test_the_metrics_endpoint_listens_on_loopback_unless_opened() -> None:
    assert Settings().metrics_host == "127.0.0.1"


def test_the_app_api_token_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_API_TOKEN", "s3cret-t0ken")
    settings = Settings()
    assert settings.app_api_token is not None
    assert settings.app_api_token.get_secret_value() == "s3cret-t0ken"
    assert "s3cret-t0ken" not in repr(settings)


def test_prompts_in_bulk_are_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis delivers concurrently without it; on Kafka the deployment turns it on.
    assert not Settings().bulk_subscribe.enabled
    monkeypatch.setenv("WORKER_BULK_SUBSCRIBE__ENABLED", "true")
    monkeypatch.setenv("WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS", "250")
    bulk = Settings().bulk_subscribe
    assert (bulk.enabled, bulk.max_messages, bulk.max_await_ms) == (True, 100, 250)


def test_prompts_are_read_from_the_main_pubsub_unless_more_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [(s.pubsub, s.topic) for s in subscriptions(Settings())] == [
        ("pubsub", "prompts"),
        ("pubsub", "cancellations"),
    ]
    # On Kafka: three consumers in one replica, each taking prompts; one reads cancellations.
    names = '["pubsub", "pubsub-prompts-1", "pubsub-prompts-2"]'
    monkeypatch.setenv("WORKER_PROMPT_PUBSUBS", names)
    monkeypatch.setenv("WORKER_BULK_SUBSCRIBE__ENABLED", "true")
    declared = subscriptions(Settings())
    assert [(s.pubsub, s.topic) for s in declared] == [
        ("pubsub", "prompts"),
        ("pubsub-prompts-1", "prompts"),
        ("pubsub-prompts-2", "prompts"),
        ("pubsub", "cancellations"),
    ]
    # Each prompt subscription as the main one: dead letters, bulk delivery.
    for prompts in declared[:3]:
        assert prompts.dead_letter_topic == "prompts-deadletter"
        assert prompts.bulk is not None


def test_a_prompt_pubsub_named_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_PROMPT_PUBSUBS", '["pubsub", "pubsub"]')
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "prompt_pubsubs" in str(raised.value)
