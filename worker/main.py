"""Wiring: settings in, a running worker out. Signals are `__main__`'s business."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from worker.llm.base import LLMBackend
from worker.llm.conversation import ConversationBackend
from worker.llm.echo import EchoBackend
from worker.llm.openai import OpenAIBackend
from worker.llm.registry import BackendRegistry
from worker.observability.metrics import Metrics, serve_metrics
from worker.observability.tracing import start_tracing
from worker.pipeline.batching import BatchingPublisher
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import GuardSettings, TurnGuard
from worker.pipeline.handler import PromptHandler, PublishPolicy
from worker.pipeline.history import ConversationHistory
from worker.pipeline.intake import Limits
from worker.pipeline.ports import BulkEventSink
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.state_reads import BatchingStateReader
from worker.service import Worker
from worker.settings import Settings
from worker.transport.dapr import AppServer, BulkSubscribe, Conversations, Subscription
from worker.transport.http_publisher import HttpPublisher
from worker.transport.routed import RoutedPublisher
from worker.transport.sidecar import SidecarClient

__all__ = ["main", "subscriptions"]

log = logging.getLogger("worker")


async def main(settings: Settings, shutdown: asyncio.Event) -> None:
    """Serve prompts until `shutdown` is set, then drain within the grace period."""
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        # First in, last out: spans still buffered are exported after the last turn.
        log.info("%s", stack.enter_context(start_tracing(settings.app_id)))
        if settings.metrics_port:
            await stack.enter_async_context(
                serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
            )
        sidecar = await stack.enter_async_context(
            SidecarClient(
                f"{settings.dapr_host}:{settings.dapr_grpc_port}",
                api_token=settings.dapr_api_token,
            )
        )
        events: BulkEventSink = sidecar
        if settings.publish_protocol != "grpc":
            http = await stack.enter_async_context(
                HttpPublisher(
                    settings.dapr_host,
                    settings.dapr_http_port,
                    api_token=settings.dapr_api_token,
                )
            )
            # auto: large bulk publishes stay on gRPC, where daprd reads them for less.
            events = http if settings.publish_protocol == "http" else RoutedPublisher(http, sidecar)
        publisher = await stack.enter_async_context(
            BatchingPublisher(
                events,
                max_in_flight=settings.publish_max_in_flight,
                max_batch=settings.publish_max_batch,
                metrics=metrics,
            )
        )
        # The turns' reads in few calls; guard, history and cancellations read through it.
        state = await stack.enter_async_context(
            BatchingStateReader(
                sidecar, max_in_flight=settings.state_read_max_in_flight, max_keys=100
            )
        )
        backends: list[LLMBackend] = [
            EchoBackend(name=settings.echo.name, delay=settings.echo.delay_seconds)
        ]
        for config in settings.openai:
            backends.append(
                await stack.enter_async_context(
                    OpenAIBackend(
                        name=config.name,
                        base_url=config.base_url,
                        model=config.model,
                        api_key=config.api_key,
                        connect_timeout=config.connect_timeout_seconds,
                        read_timeout=config.read_timeout_seconds,
                    )
                )
            )
        conversations = Conversations(sidecar)
        backends.extend(
            ConversationBackend(name=name, converser=conversations)
            for name in sorted(settings.conversation_components)
        )
        guard_settings = GuardSettings(
            lease_seconds=settings.lease_seconds,
            done_ttl_seconds=settings.done_ttl_seconds,
            max_wait_seconds=settings.max_wait_seconds,
        )
        handler = PromptHandler(
            sink=publisher,
            backends=BackendRegistry(backends, settings.llm_component_default),
            history=ConversationHistory(
                state,
                settings.state_store,
                max_turns=settings.history_max_turns,
                max_chars=settings.history_max_chars,
                ttl_seconds=settings.history_ttl_seconds,
                timeout=guard_settings.call_timeout,
            ),
            guard=TurnGuard(state, settings.state_store, guard_settings),
            cancellations=Cancellations(
                state, settings.state_store, timeout=guard_settings.call_timeout
            ),
            scrubber=PiiScrubber(),
            limits=Limits(
                max_prompt_bytes=settings.max_prompt_bytes,
                max_messages=settings.max_messages,
                reply_topics=settings.reply_topics,
                default_reply_topic=settings.response_topic,
            ),
            policy=PublishPolicy(
                pubsub=settings.pubsub_name,
                source=f"/{settings.app_id}",
                attempts=settings.publish_attempts,
                backoff=settings.publish_backoff_seconds,
            ),
            cancel_topic=settings.cancel_topic,
            metrics=metrics,
        )
        worker = Worker(
            handler,
            topics={settings.prompt_topic, settings.cancel_topic},
            max_concurrent=settings.max_concurrent_streams,
            grace=settings.shutdown_grace_seconds,
            metrics=metrics,
        )
        server = AppServer(
            host=settings.app_host,
            port=settings.app_port,
            subscriptions=subscriptions(settings),
            handler=worker.deliver,
            api_token=settings.app_api_token,
        )
        log.info(
            "worker %s: prompts from %s on %s, LLM components %s (default %s)",
            settings.app_id,
            settings.prompt_topic,
            ", ".join(settings.prompt_pubsub_names),
            ", ".join(sorted(b.name for b in backends)),
            settings.llm_component_default,
        )
        await worker.run(server, shutdown)
    log.info("worker stopped")


def subscriptions(settings: Settings) -> list[Subscription]:
    """The prompt topic on every prompt pub/sub (each its own consumer on Kafka), the
    cancellations on the main one: a cancellation needs one reader, it goes to the state
    store, where every replica's turns watch for it."""
    prompts = [
        Subscription(name, settings.prompt_topic, settings.deadletter_topic, bulk=_bulk(settings))
        for name in settings.prompt_pubsub_names
    ]
    return [*prompts, Subscription(settings.pubsub_name, settings.cancel_topic)]


def _bulk(settings: Settings) -> BulkSubscribe | None:
    bulk = settings.bulk_subscribe
    if not bulk.enabled:
        return None
    return BulkSubscribe(max_messages=bulk.max_messages, max_await_ms=bulk.max_await_ms)
