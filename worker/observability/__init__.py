"""Metrics (Prometheus, GenAI semantic-convention names) and structured logs."""

from worker.observability.metrics import Metrics, serve_metrics

__all__ = ["Metrics", "serve_metrics"]
