"""Prints the PII scrubber's recall and false positives per kind on tests/unit/pii_corpus.py,
for `scrub()` and for one-character-at-a-time streaming. Writes nothing.

Run from the repository root: .venv/bin/python bench/pii_corpus_report.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# The corpus lives under tests/, which is not installed: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.pii_corpus import NEGATIVES, POSITIVES, KindTally, tally
from worker.pipeline.scrub import KINDS, PiiScrubber

__all__ = ["main"]


def _streamed(scrubber: PiiScrubber, text: str) -> str:
    stream = scrubber.stream()
    return "".join(stream.feed(ch) for ch in text) + stream.flush()


def _print_table(title: str, tallies: dict[str, KindTally]) -> None:
    print(f"{title}:")
    print(f"  {'kind':<14} {'caught':>9} {'recall':>7} {'false +':>8} {'stray':>6}")
    for kind in KINDS:
        t = tallies[kind]
        caught = f"{t.caught}/{t.values}"
        print(f"  {kind:<14} {caught:>9} {t.recall:>7.1%} {t.false_positives:>8} {t.stray:>6}")
    values = sum(t.values for t in tallies.values())
    caught_all = sum(t.caught for t in tallies.values())
    fp = sum(t.false_positives for t in tallies.values())
    stray = sum(t.stray for t in tallies.values())
    total = f"{caught_all}/{values}"
    print(f"  {'all':<14} {total:>9} {caught_all / values:>7.1%} {fp:>8} {stray:>6}")


def main() -> None:
    scrubber = PiiScrubber()
    print(f"corpus: {len(POSITIVES)} positive samples, {len(NEGATIVES)} negative samples")
    print("false + = placeholders in negative samples; stray = unexpected ones in positives")
    _print_table("scrub()", tally(scrubber.scrub))
    _print_table("stream, one char at a time", tally(lambda t: _streamed(scrubber, t)))


if __name__ == "__main__":
    main()
