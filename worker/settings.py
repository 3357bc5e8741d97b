"""All configuration, read once from the environment in `main` and passed down.

Environment variables use the prefix `WORKER_` (nested fields with `__`), except the
names Dapr itself defines: `DAPR_LLM_COMPONENT_DEFAULT`, `DAPR_GRPC_PORT`, `DAPR_HTTP_PORT`,
`APP_PORT`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.contract.prompt import DEFAULT_MAX_MESSAGES, DEFAULT_MAX_PROMPT_BYTES

__all__ = ["BulkSubscribeSettings", "EchoSettings", "OpenAISettings", "Settings"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Name = Annotated[str, Field(pattern=_NAME)]


class EchoSettings(BaseModel):
    """The built-in echo backend: no network, no key."""

    name: Name = "echo"
    delay_seconds: float = Field(0.05, ge=0, le=10)


class OpenAISettings(BaseModel):
    """An OpenAI-compatible streaming endpoint, called directly or through a Dapr HTTPEndpoint."""

    name: Name = "openai"
    base_url: str
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    connect_timeout_seconds: float = Field(10, gt=0)
    read_timeout_seconds: float = Field(60, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")


class BulkSubscribeSettings(BaseModel):
    """Dapr bulk subscribe on the prompt topic, for Kafka (and other partitioned brokers).

    Dapr's Kafka subscriber hands a partition's messages over one at a time and waits
    for each answer; a prompt is answered only after its reply streamed, so one long
    reply holds up its whole partition. In bulk, Dapr hands over up to `max_messages`
    of a partition at once, the worker streams them all concurrently and answers each
    entry on its own. Dapr 1.18 runs one component's batches one at a time across all
    the partitions it holds: on Kafka, pair it with a component per partition a replica
    holds (`prompt_pubsubs`), as k8s/overlays/kafka does (README "Scaling out on
    Kafka"). Off by default: Redis needs none of it.
    """

    enabled: bool = False
    max_messages: int = Field(100, ge=1, le=10_000)
    max_await_ms: int = Field(100, ge=1, le=60_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WORKER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    app_id: Name = "llm-stream-worker"
    pubsub_name: Name = "pubsub"
    # The pub/sub components the prompt topic is read from (default: `pubsub_name` alone).
    # On Kafka, several components on one broker and one consumer group are several
    # group members in one replica: each holds fewer partitions of `prompts`, and Dapr
    # runs each member's deliveries apart (README "Scaling out on Kafka"). Replies and
    # cancellations stay on `pubsub_name`.
    prompt_pubsubs: tuple[Name, ...] = ()
    state_store: Name = "statestore"
    prompt_topic: Name = "prompts"
    response_topic: Name = "responses"
    cancel_topic: Name = "cancellations"
    deadletter_topic: Name = "prompts-deadletter"
    # Topics a prompt may name as `reply_topic`; the response topic is always allowed.
    reply_topic_allowlist: frozenset[str] = frozenset()

    app_host: str = "127.0.0.1"
    app_port: int = Field(
        50051, ge=1, le=65535, validation_alias=AliasChoices("APP_PORT", "WORKER_APP_PORT")
    )
    dapr_host: str = "127.0.0.1"
    dapr_grpc_port: int = Field(
        50001,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("DAPR_GRPC_PORT", "WORKER_DAPR_GRPC_PORT"),
    )
    # daprd's HTTP API: the worker publishes through it (see `publish_protocol`).
    dapr_http_port: int = Field(
        3500,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("DAPR_HTTP_PORT", "WORKER_DAPR_HTTP_PORT"),
    )
    # How events go to the sidecar; the broker sees the same events either way. Over
    # HTTP a publish costs the worker about a third of what grpc.aio costs; past about
    # 50 events a call daprd's HTTP side costs more than that saves. `auto`: HTTP, but
    # bulk publishes of 32 events or more over gRPC (worker/transport/routed.py,
    # bench/results/call-cost/).
    publish_protocol: Literal["auto", "http", "grpc"] = "auto"
    dapr_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DAPR_API_TOKEN", "WORKER_DAPR_API_TOKEN")
    )
    # Dapr's app API token: the sidecar presents it on every call to the app; with it
    # set, the app port answers no one else.
    app_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("APP_API_TOKEN", "WORKER_APP_API_TOKEN")
    )

    llm_component_default: Name = Field(
        "echo",
        validation_alias=AliasChoices("DAPR_LLM_COMPONENT_DEFAULT", "WORKER_LLM_COMPONENT_DEFAULT"),
    )
    echo: EchoSettings = EchoSettings()
    openai: list[OpenAISettings] = []
    # Dapr conversation components (ConverseAlpha2) a prompt may select by name.
    conversation_components: frozenset[str] = frozenset()

    max_prompt_bytes: int = Field(DEFAULT_MAX_PROMPT_BYTES, ge=1024)
    max_messages: int = Field(DEFAULT_MAX_MESSAGES, ge=1)
    max_concurrent_streams: int = Field(512, ge=1)
    bulk_subscribe: BulkSubscribeSettings = BulkSubscribeSettings()
    shutdown_grace_seconds: float = Field(20, ge=0)

    publish_attempts: int = Field(5, ge=1)
    publish_backoff_seconds: float = Field(0.05, ge=0)
    # Publish calls outstanding to the sidecar at once; events beyond that wait and go
    # out together as one bulk publish of at most `publish_max_batch` events.
    publish_max_in_flight: int = Field(4, ge=1, le=1024)
    publish_max_batch: int = Field(100, ge=1, le=1000)
    # State reads outstanding to the sidecar at once; reads beyond that wait and go out
    # together as one bulk read (the turns' periodic reads share a tick, so they meet).
    state_read_max_in_flight: int = Field(4, ge=1, le=1024)

    # A turn's lease on its context: renewed every third of this while it streams; a
    # crashed worker's turn is taken over this long after its last renewal.
    lease_seconds: int = Field(15, ge=3, le=3600)
    # How long "this request is done" is remembered, to acknowledge late duplicates.
    done_ttl_seconds: int = Field(24 * 3600, ge=60)
    # How long a delivery waits for its context to be free before answering RETRY.
    max_wait_seconds: float = Field(600, gt=0)

    history_max_turns: int = Field(20, ge=0)
    history_max_chars: int = Field(32_000, ge=0)
    history_ttl_seconds: int = Field(7 * 24 * 3600, ge=1)

    # uvloop where installed (a dependency, but not on Windows): asyncio's own loop costs
    # the worker about a tenth more CPU per token.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # Prometheus scrapes /metrics here; 0 switches the endpoint off. Loopback unless the
    # deployment opens it (k8s sets 0.0.0.0 for the pod's scraper).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)

    @property
    def reply_topics(self) -> frozenset[str]:
        return self.reply_topic_allowlist | {self.response_topic}

    @property
    def prompt_pubsub_names(self) -> tuple[str, ...]:
        return self.prompt_pubsubs or (self.pubsub_name,)

    @field_validator("prompt_pubsubs")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) != len(set(value)):
            raise ValueError("pub/sub names must be distinct")
        return value

    @model_validator(mode="after")
    def _default_component_exists(self) -> Settings:
        names = [self.echo.name, *(o.name for o in self.openai), *self.conversation_components]
        if len(names) != len(set(names)):
            raise ValueError(f"LLM component names must be unique, got {sorted(names)}")
        if self.llm_component_default not in names:
            raise ValueError(
                f"DAPR_LLM_COMPONENT_DEFAULT={self.llm_component_default!r} is not a configured "
                f"LLM component (configured: {sorted(names)})"
            )
        return self
