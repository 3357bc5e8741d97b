"""Reading a worker's Prometheus endpoint, as a scraper would."""

from __future__ import annotations

import re
import urllib.request

__all__ = ["scrape", "series"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def series(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text exposition (labels: a subset)."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in /metrics")
