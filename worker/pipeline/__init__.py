"""One turn of the worker: prompt in, ordered reply events out, and what shapes them."""

__all__: list[str] = []
