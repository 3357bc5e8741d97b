"""The gateway's configuration: environment variables with the prefix `GATEWAY_`, read once.

The sidecar's own names are honoured too: `DAPR_HTTP_PORT` and `DAPR_API_TOKEN`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    # The public HTTP API (OpenAI-compatible, SSE, the demo page).
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    # Where the sidecar delivers response events (daprd's --app-port). Loopback: only the
    # sidecar in the same pod may push events, nobody through the public port.
    callback_host: str = "127.0.0.1"
    callback_port: int = Field(8081, ge=1, le=65535)

    dapr_host: str = "127.0.0.1"
    dapr_http_port: int = Field(
        3500,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("GATEWAY_DAPR_HTTP_PORT", "DAPR_HTTP_PORT"),
    )
    dapr_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_DAPR_API_TOKEN", "DAPR_API_TOKEN")
    )
    # The token the sidecar presents on the callback port (daprd's APP_API_TOKEN); unset:
    # no check (the port listens on loopback only).
    app_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_APP_API_TOKEN", "APP_API_TOKEN")
    )
    # Every replica must read every reply: this component's consumer group must be the
    # replica's own (`consumerID: "{podName}"`), see the README.
    pubsub: Name = "pubsub"
    state_store: Name = "statestore"
    prompt_topic: Name = "prompts"
    response_topic: Name = "responses"
    cancel_topic: Name = "cancellations"

    # Replay is bounded: each stored event expires after this, and at most this many
    # events of one attempt are stored (a longer reply streams live but cannot be replayed
    # past that point).
    replay_ttl_seconds: int = Field(3600, ge=60)
    replay_max_events: int = Field(8192, ge=16)

    # Bulk subscription: the sidecar hands over up to this many events per call (at most
    # `bulk_max_await_ms` late); 1 turns it off. The pub/sub component's `concurrency`
    # must be at least as large, or batches never fill.
    bulk_max_messages: int = Field(100, ge=1, le=1000)
    bulk_max_await_ms: int = Field(5, ge=1, le=1000)

    # 504 when the worker has not started a reply within this (the reply stays resumable).
    first_event_timeout_seconds: float = Field(30.0, gt=0)
    # A stream with no event for this long ends with a `timeout` error.
    idle_timeout_seconds: float = Field(120.0, gt=0)
    # Bound on every call to the sidecar.
    sidecar_timeout_seconds: float = Field(5.0, gt=0)
    # A follower that hears nothing live looks into the state store this often.
    poll_interval_seconds: float = Field(1.0, gt=0)
    # A quiet SSE stream gets a keep-alive comment this often (proxies close idle ones).
    heartbeat_seconds: float = Field(15.0, gt=0)
    # EventSource reconnection delay sent to browsers (`retry:`).
    sse_retry_ms: int = Field(1000, ge=0)

    # The `model` a request may send to leave the LLM component to the worker's default.
    default_model: str = "default"
    max_body_bytes: int = Field(512 * 1024, ge=1024)
