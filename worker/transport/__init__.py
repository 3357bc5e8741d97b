"""Transport: the Dapr sidecar at the edge of the worker."""

from worker.transport.dapr import AppServer, MessageHandler, SidecarClient, Subscription

__all__ = ["AppServer", "MessageHandler", "SidecarClient", "Subscription"]
