"""Reading Mooncake-format JSONL traces as a stream, and turning records into fingerprints.

One JSON object a line: ``timestamp`` (ms from start), ``input_length``, ``output_length`` (tokens)
and ``hash_ids`` (one id per ``block_tokens``-token block, prefix-chained). Bad lines are counted
(with the first line number) and skipped, or raise :class:`TraceError` in strict mode.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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


class _Continuations:
    __slots__ = ("full", "partial", "shared")

    def __init__(self) -> None:
        self.full = 0  # the first full block seen after this one (0: none yet)
        self.partial: set[int] = set()  # final partial blocks seen after this one
        self.shared = False


class TraceFingerprinter:
    """Builds fingerprints from trace records, deriving session and prefix keys as live traffic would.

    Block hashes chain the trace's ids (``xxh3(id, seed=previous)``), so they behave like live
    block hashes. A trace has no session ids, so the session is the request's first *own* block:
    the first one past the deepest block that different continuations have followed (a shared
    system prompt, or the instructions a group of prompts shares). Two different full blocks after
    a block make it shared. Final partial blocks are weaker evidence: a conversation's next turn
    replaces its previous turn's final partial block, with a longer partial one or with a full one,
    so only ``partial_continuations`` different final partial blocks make a block shared. The
    prefix key is the first block past the blocks that carry at least ``nearly_everyone`` of all
    requests (the key ``prefix_hash`` routes on). Memory is bounded by an LRU of ``max_entries``.
    """

    def __init__(
        self,
        block_tokens: int = 512,
        *,
        nearly_everyone: float = 0.5,
        max_entries: int = 500_000,
        partial_continuations: int = 8,
        detector: HotPrefixDetector | None = None,
    ) -> None:
        self.block_tokens = block_tokens
        self.nearly_everyone = nearly_everyone
        self.max_entries = max_entries
        self.partial_continuations = partial_continuations
        self.detector = detector if detector is not None else HotPrefixDetector(min_sessions=2)
        self._continuations: OrderedDict[int, _Continuations] = OrderedDict()

    def _own_depth(self, blocks: tuple[int, ...], partial_last: bool) -> int:
        """Blocks up to and including the deepest one shared by different continuations."""
        continuations = self._continuations
        depth = 0
        last = len(blocks) - 1
        for i in range(last):
            block = blocks[i]
            entry = continuations.get(block)
            if entry is None:
                entry = _Continuations()
                continuations[block] = entry
                if len(continuations) > self.max_entries:
                    continuations.popitem(last=False)
            else:
                continuations.move_to_end(block)
            if not entry.shared:
                if partial_last and i + 1 == last:
                    entry.partial.add(blocks[i + 1])
                    entry.shared = len(entry.partial) >= self.partial_continuations
                elif entry.full == 0:
                    entry.full = blocks[i + 1]
                elif entry.full != blocks[i + 1]:
                    entry.shared = True
            if entry.shared:
                depth = i + 1
        return depth

    def fingerprint(self, record: TraceRecord) -> tuple[Fingerprint, int]:
        """The record's fingerprint and its prefix key."""
        blocks: list[int] = []
        previous = 0
        for block_id in record.hash_ids:
            previous = _hash((block_id & _MASK64).to_bytes(8, "little"), previous)
            blocks.append(previous)
        chained = tuple(blocks)
        last = len(chained) - 1
        partial_last = record.input_length < len(chained) * self.block_tokens
        session_block = chained[min(self._own_depth(chained, partial_last), last)]
        session = f"t{session_block:016x}"
        self.detector.observe(chained, session)
        prefix_key = chained[min(self.detector.shared_depth(chained, self.nearly_everyone), last)]
        fingerprint = Fingerprint(
            blocks=chained,
            session=session,
            prompt_tokens=record.input_length,
            block_tokens=self.block_tokens,
            session_source=SessionSource.DERIVED,
        )
        return fingerprint, prefix_key
