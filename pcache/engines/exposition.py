"""Prometheus text -> samples by wire name, tolerant of partial and truncated captures."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "parse_samples"]

Labels = dict[str, str]
_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError)
_ABSURD = 1e18  # above any real count of tokens, blocks, requests or seconds


@dataclass(slots=True)
class Samples:
    """Every sample of one scrape, keyed by its wire name (``vllm:prefix_cache_hits_total``).

    ``*_created`` samples are dropped: they are creation timestamps, not values. ``damaged`` counts
    lines that could not be parsed (a truncated capture); what could be read is still here.
    ``rejected`` counts samples dropped one by one as implausible, so one bad sample costs only itself.
    """

    by_name: dict[str, list[tuple[Labels, float]]] = field(default_factory=lambda: defaultdict(list))
    damaged: int = 0
    rejected: int = 0  # samples dropped as implausible (infinite, negative or absurd)

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def names(self) -> list[str]:
        """Every sample name present."""
        return list(self.by_name)

    def _values(self, name: str, match: dict[str, str]) -> list[float]:
        """The non-NaN values of ``name`` whose labels match ``match``."""
        return [
            value
            for labels, value in self.by_name.get(name, ())
            if _matches(labels, match) and not math.isnan(value)
        ]

    def total(self, name: str, **match: str) -> float | None:
        """Sum over every label set (several engines, finish reasons...) matching ``match``."""
        values = self._values(name, match)
        return math.fsum(values) if values else None

    def count(self, name: str, **match: str) -> int | None:
        """:meth:`total` rounded to an integer (requests, blocks, block sizes)."""
        value = self.total(name, **match)
        return None if value is None else round(value)

    def mean(self, name: str, **match: str) -> float | None:
        """Mean over the matching label sets (for fractions such as cache usage)."""
        values = self._values(name, match)
        return math.fsum(values) / len(values) if values else None

    def label(self, name: str, key: str) -> str | None:
        """The value of label ``key`` on the first sample of ``name`` that has it."""
        for labels, _ in self.by_name.get(name, ()):
            if key in labels:
                return labels[key]
        return None

    def first_label(self, key: str, prefix: str) -> str | None:
        """The value of label ``key`` on the first sample whose name starts with ``prefix``."""
        for name, samples in self.by_name.items():
            if name.startswith(prefix):
                for labels, _ in samples:
                    if labels.get(key):
                        return labels[key]
        return None

    def histogram(
        self, name: str
    ) -> tuple[tuple[tuple[float, float], ...] | None, float | None, float | None]:
        """Cumulative ``(le, count)`` buckets (summed over label sets), ``_sum`` and ``_count``."""
        by_edge: dict[float, float] = defaultdict(float)
        for labels, value in self.by_name.get(f"{name}_bucket", ()):
            try:
                edge = float(labels["le"])
            except (KeyError, ValueError):
                continue
            by_edge[edge] += value
        buckets = tuple(sorted(by_edge.items())) or None
        return buckets, self.total(f"{name}_sum"), self.total(f"{name}_count")


def _matches(labels: Labels, match: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in match.items())


def _add_families(samples: Samples, text: str) -> None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            value = float(sample.value)
            if not _plausible(value):
                samples.rejected += 1
                continue
            samples.by_name[sample.name].append((dict(sample.labels), value))


def _plausible(value: float) -> bool:
    """Whether a sample can be an engine's counter, gauge or bucket: finite, not negative, not
    absurd. ``-inf`` froze a replica's stats (``round`` raised on every scrape); NaN stays, as
    Prometheus' "no value" (the readers skip it)."""
    return math.isnan(value) or 0.0 <= value <= _ABSURD


def parse_samples(text: str) -> Samples:
    """Parse Prometheus text with ``prometheus_client``; on a malformed capture, recover line by line."""
    samples = Samples()
    try:
        _add_families(samples, text)
        return samples
    except _PARSE_ERRORS:
        samples = Samples()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            _add_families(samples, stripped + "\n")
        except _PARSE_ERRORS:
            samples.damaged += 1
    return samples
