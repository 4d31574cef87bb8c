"""Reading Mooncake-format JSONL traces as a stream, and turning records into fingerprints.

One JSON object a line: ``timestamp`` (ms from start), ``input_length``, ``output_length`` (tokens)
and ``hash_ids`` (one id per ``block_tokens``-token block, prefix-chained). Bad lines are counted
(with the first line number) and skipped, or raise :class:`TraceError` in strict mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from pcache.fingerprint import Fingerprint, SessionSource
from pcache.hotprefix import HotPrefixDetector

__all__ = ["TraceError", "TraceFingerprinter", "TraceReader", "TraceRecord", "count_lines"]

_hash = xxhash.xxh3_64_intdigest
_MASK64 = (1 << 64) - 1


class TraceError(ValueError):
    """A bad trace line in strict mode; ``line`` is its 1-based number."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class TraceRecord:
    line: int
    timestamp_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _parse(text: str, line: int) -> TraceRecord:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(line, f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise TraceError(line, "not a JSON object")
    missing = [f for f in ("timestamp", "input_length", "output_length", "hash_ids") if f not in obj]
    if missing:
        raise TraceError(line, f"missing field(s): {', '.join(missing)}")
    timestamp, inputs, outputs = obj["timestamp"], obj["input_length"], obj["output_length"]
    ids = obj["hash_ids"]
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or timestamp < 0:
        raise TraceError(line, "timestamp must be a non-negative number (ms)")
    for name, value in (("input_length", inputs), ("output_length", outputs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TraceError(line, f"{name} must be a non-negative integer")
    if not isinstance(ids, list) or not ids or not all(type(i) is int for i in ids):
        raise TraceError(line, "hash_ids must be a non-empty list of integers")
    return TraceRecord(line, timestamp / 1000.0, inputs, outputs, tuple(ids))


class TraceReader:
    """Iterates the records of a trace file, one line at a time; counts what it skipped."""

    def __init__(self, path: str | Path, *, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.bad_lines = 0
        self.first_bad: TraceError | None = None

    def __iter__(self) -> Iterator[TraceRecord]:
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    yield _parse(text, number)
                except TraceError as error:
                    if self.strict:
                        raise
                    self.bad_lines += 1
                    if self.first_bad is None:
                        self.first_bad = error


def count_lines(path: str | Path) -> int:
    """Non-empty lines in a file, read in chunks (for percent-of-trace scale events)."""
    count = 0
    with Path(path).open("rb") as handle:
        for text in handle:
            if text.strip():
                count += 1
    return count


class TraceFingerprinter:
    """Builds fingerprints from trace records, deriving session and prefix keys as live traffic would.

    Block hashes chain the trace's ids (``xxh3(id, seed=previous)``), so they behave like live
    block hashes. A trace has no session ids: the session is the first block past the hot prefix
    (blocks many different continuations share, such as a common system prompt), as for a live
    completion without one. The prefix key is the first block past the blocks that carry at least
    ``nearly_everyone`` of all requests (the key ``prefix_hash`` routes on).
    """

    def __init__(
        self,
        block_tokens: int = 512,
        *,
        min_sessions: int = 8,
        nearly_everyone: float = 0.5,
        detector: HotPrefixDetector | None = None,
    ) -> None:
        self.block_tokens = block_tokens
        self.nearly_everyone = nearly_everyone
        self.detector = detector if detector is not None else HotPrefixDetector(min_sessions=min_sessions)

    def fingerprint(self, record: TraceRecord) -> tuple[Fingerprint, int]:
        """The record's fingerprint and its prefix key."""
        blocks: list[int] = []
        previous = 0
        for block_id in record.hash_ids:
            previous = _hash((block_id & _MASK64).to_bytes(8, "little"), previous)
            blocks.append(previous)
        chained = tuple(blocks)
        depth = self.detector.observe(chained)
        last = len(chained) - 1
        session = f"t{chained[min(depth, last)]:016x}"
        prefix_key = chained[min(self.detector.shared_depth(chained, self.nearly_everyone), last)]
        fingerprint = Fingerprint(
            blocks=chained,
            session=session,
            prompt_tokens=record.input_length,
            block_tokens=self.block_tokens,
            session_source=SessionSource.DERIVED,
        )
        return fingerprint, prefix_key
