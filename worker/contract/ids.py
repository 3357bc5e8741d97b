"""Id rules of the contract that more than one side applies (worker, client, gateway)."""

from __future__ import annotations

import uuid

__all__ = ["assign_context_id"]

# Fixed, so a redelivered prompt without a context id gets the same one again.
_CONTEXT_NAMESPACE = uuid.UUID("6f1c3c52-2b0e-4d7a-9a51-8b3f0c7e2d14")


def assign_context_id(request_id: str) -> str:
    """The context id the worker gives a prompt that names none (contract section 1)."""
    return f"ctx-{uuid.uuid5(_CONTEXT_NAMESPACE, request_id)}"
