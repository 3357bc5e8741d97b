"""The configured LLM backends, looked up by a prompt's `llm_component`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from worker.errors import UnknownComponent
from worker.llm.base import LLMBackend

__all__ = ["BackendRegistry"]


class BackendRegistry:
    def __init__(self, backends: Iterable[LLMBackend], default: str) -> None:
        self._backends: Mapping[str, LLMBackend] = {b.name: b for b in backends}
        if default not in self._backends:
            raise UnknownComponent(f"default LLM component {default!r} is not configured")
        self.default = default

    @property
    def names(self) -> list[str]:
        return sorted(self._backends)

    def get(self, name: str | None) -> LLMBackend:
        try:
            return self._backends[name or self.default]
        except KeyError:
            raise UnknownComponent(
                f"llm_component: no LLM component named {name!r} "
                f"(configured: {', '.join(self.names)})"
            ) from None
