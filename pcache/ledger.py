"""What happened: the router's bounded-memory record of traffic, caching and drift.

Time is cut into fixed windows (``window_s``); the last ``history`` windows are kept. Per window the
ledger counts requests and prompt tokens by (prefix, replica), the cached tokens the router predicted
next to the ones the engines reported, session requests and home moves by cause. A prefix is a
Tier-1 prefix the request matched or, failing that, the deepest block the hot-prefix detector has
seen from many distinct sessions; the long tail of one-off prompts is counted in totals only. This
is the data behind ``pcache status``, the heat map and the drift chart.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pcache.api import DriftPoint, DriftSeries, PrefixCell, PrefixHeat, PrefixRow
from pcache.fingerprint import Fingerprint
from pcache.fleet_view import Tier1Prefix
from pcache.hotprefix import HotPrefixDetector
from pcache.policy.base import Decision, Outcome

__all__ = ["HotPrefix", "Ledger"]

_SESSIONS_PER_PREFIX = 4096  # distinct sessions remembered per prefix (counts saturate beyond)


@dataclass(frozen=True, slots=True)
class HotPrefix:
    """An unregistered prefix shared by many sessions: a candidate for auto Tier-1 promotion."""

    key: int
    blocks: tuple[int, ...]
    sessions: int
    requests: int
    share: float  # of all requests in the recent window


@dataclass(slots=True)
class _Cell:
    requests: int = 0
    tokens: int = 0


@dataclass(slots=True)
class _Window:
    index: int
    requests: int = 0
    prompt_tokens: int = 0
    predicted_cached: int = 0
    engine_cached: int = 0  # from responses' usage.prompt_tokens_details.cached_tokens
    engine_prompt: int = 0  # prompt tokens of responses that reported usage
    engine_queries: float = 0.0  # from scrapes of the engines' prefix-cache counters
    engine_hits: float = 0.0
    session_requests: int = 0
    moves: Counter[str] = field(default_factory=Counter)
    by_replica: Counter[str] = field(default_factory=Counter)
    hits_by_replica: dict[str, list[float]] = field(default_factory=dict)  # replica -> [queries, hits]
    by_prefix: dict[tuple[str, str], _Cell] = field(default_factory=dict)  # (prefix id, replica)
    prefix_prompt: Counter[str] = field(default_factory=Counter)
    prefix_predicted: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _PrefixInfo:
    key: int
    blocks: tuple[int, ...]
    block_tokens: int
    sessions: OrderedDict[str, None] = field(default_factory=OrderedDict)


class Ledger:
    """Bounded record of routing outcomes. Call from one thread (the router's event loop)."""

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        history: int = 360,
        recent_windows: int = 6,
        max_prefixes: int = 10_000,
        max_sessions: int = 1_000_000,
        hot_min_sessions: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or history < 1 or recent_windows < 1:
            raise ValueError("window_s must be > 0, history and recent_windows >= 1")
        self.window_s = window_s
        self.history = history
        self.recent_windows = min(recent_windows, history)
        self.max_prefixes = max_prefixes
        self._clock = clock
        self._started = clock()
        self._windows: OrderedDict[int, _Window] = OrderedDict()
        self._prefixes: OrderedDict[str, _PrefixInfo] = OrderedDict()
        self._detector = HotPrefixDetector(min_sessions=hot_min_sessions, max_entries=max_sessions)
        self._totals: Counter[str] = Counter()
        self._moves_total: Counter[str] = Counter()

    # ---- recording ------------------------------------------------------------------------------

    def _window(self, now: float | None) -> _Window:
        index = int((self._clock() if now is None else now) // self.window_s)
        window = self._windows.get(index)
        if window is None:
            window = _Window(index)
            self._windows[index] = window
            while len(self._windows) > self.history:
                self._windows.popitem(last=False)
        return window

    def _prefix_id(self, fingerprint: Fingerprint) -> str | None:
        """Tier-1 name, else the deepest hot block on this request, else None (long tail)."""
        depth = self._detector.observe(fingerprint.blocks, fingerprint.session)
        if fingerprint.tier1 is not None:
            prefix_id = f"tier1:{fingerprint.tier1}"
            depth = fingerprint.tier1_blocks
        elif depth > 0:
            prefix_id = f"{fingerprint.blocks[depth - 1]:016x}"
        else:
            return None
        info = self._prefixes.get(prefix_id)
        if info is None:
            blocks = fingerprint.blocks[:depth]
            info = _PrefixInfo(
                key=blocks[-1] if blocks else 0, blocks=blocks, block_tokens=fingerprint.block_tokens
            )
            self._prefixes[prefix_id] = info
            while len(self._prefixes) > self.max_prefixes:
                self._prefixes.popitem(last=False)
        else:
            self._prefixes.move_to_end(prefix_id)
        if fingerprint.session is not None:
            info.sessions[fingerprint.session] = None
            info.sessions.move_to_end(fingerprint.session)
            if len(info.sessions) > _SESSIONS_PER_PREFIX:
                info.sessions.popitem(last=False)
        return prefix_id

    def record_route(
        self,
        fingerprint: Fingerprint,
        decision: Decision,
        now: float | None = None,
        *,
        predicted_tokens: int | None = None,
    ) -> None:
        """Count a routed request (call once per request, after ``Policy.route``).

        ``predicted_tokens`` is the prediction in the engine's accounting (its full KV blocks);
        without it, the tokens the predicted blocks cover."""
        window = self._window(now)
        window.requests += 1
        window.prompt_tokens += fingerprint.prompt_tokens
        self._totals["requests"] += 1
        predicted = (
            fingerprint.tokens_in(decision.predicted_cached_blocks)
            if predicted_tokens is None
            else predicted_tokens
        )
        window.predicted_cached += predicted
        if fingerprint.session is not None:
            window.session_requests += 1
        if decision.drift is not None:
            window.moves[decision.drift.cause.value] += 1
            self._moves_total[decision.drift.cause.value] += 1
        prefix_id = self._prefix_id(fingerprint)
        if decision.replica is None:
            return
        window.by_replica[decision.replica] += 1
        self._totals[f"replica:{decision.replica}"] += 1
        if prefix_id is not None:
            cell = window.by_prefix.get((prefix_id, decision.replica))
            if cell is None:
                cell = window.by_prefix[(prefix_id, decision.replica)] = _Cell()
            cell.requests += 1
            cell.tokens += fingerprint.prompt_tokens
            window.prefix_prompt[prefix_id] += fingerprint.prompt_tokens
            window.prefix_predicted[prefix_id] += predicted

    def record_outcome(
        self, fingerprint: Fingerprint, decision: Decision, outcome: Outcome, now: float | None = None
    ) -> None:
        """Count the engine-reported cached tokens of a finished request (from its usage)."""
        if outcome.cached_tokens is None:
            return
        window = self._window(now)
        window.engine_cached += outcome.cached_tokens
        window.engine_prompt += outcome.prompt_tokens or fingerprint.prompt_tokens

    def record_engine_counters(
        self, replica: str, queries_delta: float, hits_delta: float, now: float | None = None
    ) -> None:
        """Add one scrape's prefix-cache counter deltas (tokens) for ``replica``."""
        if queries_delta < 0 or hits_delta < 0:
            raise ValueError("counter deltas must be >= 0 (resets are handled by the caller)")
        window = self._window(now)
        window.engine_queries += queries_delta
        window.engine_hits += hits_delta
        pair = window.hits_by_replica.setdefault(replica, [0.0, 0.0])
        pair[0] += queries_delta
        pair[1] += hits_delta

    # ---- reading --------------------------------------------------------------------------------

    def _recent(self, now: float | None, windows: int | None = None) -> list[_Window]:
        current = int((self._clock() if now is None else now) // self.window_s)
        first = current - (windows or self.recent_windows) + 1
        # Look the few recent windows up by index: the history holds up to ``history`` of them.
        found = (self._windows.get(index) for index in range(first, current + 1))
        return [w for w in found if w is not None]

    def _covered_s(self, now: float | None, windows: int | None = None) -> float:
        """Seconds covered by the recent windows, not counting time before the ledger started."""
        t = self._clock() if now is None else now
        start = (int(t // self.window_s) - (windows or self.recent_windows) + 1) * self.window_s
        return max(t - max(start, self._started), 1e-9)

    def requests_per_s(self, replica: str | None = None, now: float | None = None) -> float:
        windows = self._recent(now)
        count = sum(w.requests if replica is None else w.by_replica.get(replica, 0) for w in windows)
        return count / self._covered_s(now)

    def requests_total(self, replica: str | None = None) -> int:
        return self._totals["requests" if replica is None else f"replica:{replica}"]

    def hit_rate(self, now: float | None = None, replica: str | None = None) -> float | None:
        """Engine-reported prefix-cache hit rate (hits / queries, tokens) over the recent windows."""
        queries = hits = 0.0
        for window in self._recent(now):
            if replica is None:
                queries += window.engine_queries
                hits += window.engine_hits
            elif replica in window.hits_by_replica:
                queries += window.hits_by_replica[replica][0]
                hits += window.hits_by_replica[replica][1]
        return hits / queries if queries > 0 else None

    def predicted_hit_rate(self, now: float | None = None) -> float | None:
        windows = self._recent(now)
        prompt = sum(w.prompt_tokens for w in windows)
        return sum(w.predicted_cached for w in windows) / prompt if prompt else None

    def reported_cached_ratio(self, now: float | None = None) -> float | None:
        """Engine-reported cached tokens / prompt tokens of responses that carried usage."""
        windows = self._recent(now)
        prompt = sum(w.engine_prompt for w in windows)
        return sum(w.engine_cached for w in windows) / prompt if prompt else None

    def drift_ratio(self, now: float | None = None) -> float | None:
        """Home moves per session request over the recent windows."""
        windows = self._recent(now)
        session_requests = sum(w.session_requests for w in windows)
        moves = sum(sum(w.moves.values()) for w in windows)
        return moves / session_requests if session_requests else None

    def moves_by_cause(self) -> dict[str, int]:
        return dict(sorted(self._moves_total.items()))

    def drift(self, since_s: float, now: float | None = None) -> DriftSeries:
        """One point per window over the last ``since_s`` seconds (empty windows included)."""
        t = self._clock() if now is None else now
        current = int(t // self.window_s)
        count = max(1, min(self.history, int(since_s // self.window_s) or 1))
        points: list[DriftPoint] = []
        causes: Counter[str] = Counter()
        for index in range(current - count + 1, current + 1):
            window = self._windows.get(index) or _Window(index)
            moves = sum(window.moves.values())
            causes.update(window.moves)
            points.append(
                DriftPoint(
                    t=min((index + 1) * self.window_s, t),
                    requests=window.requests,
                    session_requests=window.session_requests,
                    moves=moves,
                    drift_ratio=moves / window.session_requests if window.session_requests else None,
                    hit_rate=window.engine_hits / window.engine_queries if window.engine_queries else None,
                    predicted_hit_rate=(
                        window.predicted_cached / window.prompt_tokens if window.prompt_tokens else None
                    ),
                )
            )
        return DriftSeries(window_s=self.window_s, points=points, moves_by_cause=dict(sorted(causes.items())))

    def heat(
        self,
        top: int,
        tier1: Mapping[str, Tier1Prefix],
        owners: Mapping[str, list[str]],
        now: float | None = None,
        texts: Mapping[str, str] | None = None,
        fleet: Iterable[str] = (),
    ) -> PrefixHeat:
        """Top prefixes x replicas over the recent windows; registered Tier-1 prefixes always appear.

        The columns are every replica in ``fleet`` plus any that served traffic in the window.
        """
        windows = self._recent(now)
        cells: dict[str, dict[str, _Cell]] = {}
        prompt: Counter[str] = Counter()
        predicted: Counter[str] = Counter()
        replicas: set[str] = set(fleet)
        for window in windows:
            for (prefix_id, replica), cell in window.by_prefix.items():
                merged = cells.setdefault(prefix_id, {}).setdefault(replica, _Cell())
                merged.requests += cell.requests
                merged.tokens += cell.tokens
                replicas.add(replica)
            prompt.update(window.prefix_prompt)
            predicted.update(window.prefix_predicted)
        for name in tier1:
            cells.setdefault(f"tier1:{name}", {})
        for names in owners.values():
            replicas.update(names)
        for prefix in tier1.values():
            replicas.update(prefix.pinned)

        def requests_of(prefix_id: str) -> int:
            return sum(c.requests for c in cells[prefix_id].values())

        ranked = sorted(cells, key=lambda p: (-requests_of(p), p))[: max(top, 0)]
        rows = [self._row(p, cells[p], prompt, predicted, tier1, owners, texts or {}) for p in ranked]
        return PrefixHeat(window_s=self.window_s * len(windows), replicas=sorted(replicas), prefixes=rows)

    def _row(
        self,
        prefix_id: str,
        by_replica: dict[str, _Cell],
        prompt: Counter[str],
        predicted: Counter[str],
        tier1: Mapping[str, Tier1Prefix],
        owners: Mapping[str, list[str]],
        texts: Mapping[str, str],
    ) -> PrefixRow:
        info = self._prefixes.get(prefix_id)
        name = prefix_id.removeprefix("tier1:") if prefix_id.startswith("tier1:") else None
        registered = tier1.get(name) if name is not None else None
        total = sum(c.requests for c in by_replica.values())
        owner_names = owners.get(name, []) if name is not None else []
        pinned: set[str] = set()
        if registered is not None:
            # `pcache pin --copies K` names no replicas: its pin is held by its K current owners.
            pinned = set(registered.pinned or (owner_names if registered.source == "pin" else ()))
        kind: Literal["registered", "pinned", "hot"]
        if registered is None:
            kind = "hot"
        elif pinned:
            kind = "pinned"
        else:
            kind = "hot" if registered.source == "auto" else "registered"
        if registered is not None:
            key, tokens = registered.key, len(registered.blocks) * (info.block_tokens if info else 64)
        elif info is not None:
            key, tokens = info.key, len(info.blocks) * info.block_tokens
        else:
            key, tokens = int(prefix_id, 16), 0
        text = texts.get(name) if name is not None else None
        return PrefixRow(
            key=f"{key:016x}",
            name=name,
            kind=kind,
            text_head=text[:80] if text else None,
            tokens=tokens,
            sessions=len(info.sessions) if info is not None else 0,
            requests=total,
            hit_rate=predicted[prefix_id] / prompt[prefix_id] if prompt[prefix_id] else None,
            owners=sorted(owner_names),
            by_replica={
                replica: PrefixCell(
                    requests=cell.requests,
                    tokens=cell.tokens,
                    share=cell.requests / total if total else 0.0,
                    owner=replica in owner_names,
                    pinned=replica in pinned,
                )
                for replica, cell in sorted(by_replica.items())
            }
            | {
                replica: PrefixCell(owner=replica in owner_names, pinned=replica in pinned)
                for replica in sorted((set(owner_names) | pinned) - set(by_replica))
            },
        )

    def hot_prefixes(self, now: float | None = None) -> list[HotPrefix]:
        """Unregistered prefixes seen from many sessions, busiest first, with their share of traffic."""
        windows = self._recent(now)
        total = sum(w.requests for w in windows)
        requests: Counter[str] = Counter()
        for window in windows:
            for (prefix_id, _replica), cell in window.by_prefix.items():
                requests[prefix_id] += cell.requests
        found = []
        for prefix_id, count in requests.most_common():
            info = self._prefixes.get(prefix_id)
            if prefix_id.startswith("tier1:") or info is None:
                continue
            found.append(
                HotPrefix(
                    key=info.key,
                    blocks=info.blocks,
                    sessions=len(info.sessions),
                    requests=count,
                    share=count / total if total else 0.0,
                )
            )
        return found
