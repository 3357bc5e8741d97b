"""A Dapr pub/sub worker that streams LLM replies as ordered CloudEvents."""

__all__ = ["__version__"]

__version__ = "0.1.0"
