"""Wire models of the admin API: what the router serves and what :mod:`pcache.client` returns.

The router's admin app (FastAPI) publishes these in its OpenAPI schema; the CLI and console see the
daemon only through them. Numbers are raw (ratios 0..1, seconds, counts); ``None`` means unknown.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BlastRadius",
    "CandidateOut",
    "DecisionOut",
    "DriftPoint",
    "DriftSeries",
    "ErrorBody",
    "ErrorCounts",
    "EventList",
    "ExplainRequest",
    "HandoverPrewarm",
    "PinIn",
    "PinOut",
    "PrefixCell",
    "PrefixHeat",
    "PrefixRow",
    "PrewarmIn",
    "PrewarmJob",
    "PrewarmPair",
    "PrewarmPlanEntry",
    "PrewarmPrefix",
    "ReplicaIn",
    "ReplicaStatus",
    "RouterEvent",
    "RouterInfo",
    "RouterStatus",
    "StatusSnapshot",
]

ReplicaStateName = Literal["healthy", "unhealthy", "joining", "draining", "drained", "removed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Input(_Model):
    """Base of request bodies: refuses lone surrogates (JSON's ``"\\ud800"``), which decode to a
    ``str`` that no encoder, log or state store can take."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: object) -> object:
        pending = [data]
        while pending:  # iterative: hostile bodies may nest deeper than the recursion limit
            value = pending.pop()
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
            elif isinstance(value, dict):
                pending.extend(value.keys())
                pending.extend(value.values())
            elif isinstance(value, list | tuple):
                pending.extend(value)
        return data


class ErrorBody(_Model):
    """OpenAI-style error envelope, used by both the data plane and the admin API."""

    class Error(_Model):
        message: str
        type: str
        code: str | None = None
        param: str | None = None

    error: Error


# ---- status -------------------------------------------------------------------------------------


class ErrorCounts(_Model):
    """Errors over the recent window, by kind (kinds do not overlap; see ``error_window``)."""

    window_s: float = 0.0  # the span counted (0: the router does not count errors, e.g. direct mode)
    router_5xx: int = 0  # responses the router sent with a 5xx status
    upstream: int = 0  # attempts that failed before the client saw a byte (retried or not)
    mid_stream: int = 0  # streams that broke after their first byte reached the client
    retries: int = 0  # attempts moved to another replica (counted on the replica left)

    @property
    def total(self) -> int:
        return self.router_5xx + self.upstream + self.mid_stream


class ReplicaStatus(_Model):
    name: str
    url: str
    engine: str
    group: str | None = None
    weight: float = 1.0
    state: ReplicaStateName
    in_flight: int = 0  # through this router
    running: int | None = None  # engine-reported
    waiting: int | None = None
    kv_usage: float | None = None  # None while the replica is down or its scrape is stale
    load: int = 0  # in flight through this router + the engine's other running/waiting requests
    hit_rate: float | None = None  # engine prefix-cache hits / queries over the recent window
    # hit_rate split by the KV tier that supplied the cached tokens (gpu, host, disk, peer, pool),
    # same window: the parts sum to hit_rate. None when the engine does not report tiers.
    hit_rate_by_tier: dict[str, float] | None = None
    # Latency over the same recent window as hit_rate (``window_s``), from the engine histograms'
    # bucket increases between scrapes, like histogram_quantile(q, rate(x_bucket[1m])).
    window_s: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    ttft_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p95: float | None = None
    e2e_p99: float | None = None
    ttft_buckets: list[tuple[float, float]] | None = None  # the window's cumulative (le, count)
    e2e_buckets: list[tuple[float, float]] | None = None
    # Since the engine started (its cumulative histograms as scraped): labelled lifetime.
    ttft_lifetime_p50: float | None = None
    ttft_lifetime_p95: float | None = None
    # Calibration against the engine: its KV block size and capacity (vllm:cache_config_info or
    # the engine's equivalent), and characters per token learned from its usage.prompt_tokens.
    block_size: int | None = None  # tokens per KV block; the engine caches whole blocks only
    kv_capacity_tokens: int | None = None  # block_size x number of KV blocks
    chars_per_token: float | None = None  # None until enough of its responses were seen
    calibration_samples: int = 0  # responses the estimate learned from
    sessions: int = 0  # sessions homed here
    tier1_owned: list[str] = Field(default_factory=list)
    tier1_pinned: list[str] = Field(default_factory=list)
    requests_per_s: float = 0.0
    requests_total: int = 0
    errors: ErrorCounts = Field(default_factory=ErrorCounts)
    # Failed share of the window's work: for a replica, failed attempts / attempts on it; for the ALL
    # row, failed responses (5xx or broken streams) / responses. None when there was no work.
    error_rate: float | None = None
    scrape_age_s: float | None = None  # seconds since the last successful scrape
    last_error: str | None = None  # cleared when the replica answers well again
    last_error_at: float | None = None  # unix time of last_error
    stale: bool = False  # no successful scrape within the stale limit
    handover: HandoverPrewarm | None = None  # only in add-replica's answer: its Tier-1 prewarm
    # The cache index routing uses for this replica: "precise" (its engine's KV events, live) or
    # "approximate" (the router's own guess); kv_events is the ingestion's state, when configured.
    cache_index: str = "approximate"
    kv_events: dict[str, Any] | None = None
    # KV held by cached prefixes, from the precise index: tokens by medium and share of the capacity
    # (freed blocks that still hold reusable prefixes, which kv_usage does not count).
    cached_prefix_tokens: dict[str, int] | None = None
    cached_prefix_share: float | None = None
    # Predicted cached tokens against the engine's report, over the router's lifetime.
    predictions: int = 0
    prediction_exact_ratio: float | None = None
    prediction_mean_abs_error: float | None = None


class RouterInfo(_Model):
    url: str  # data-plane URL
    admin_url: str
    policy: str
    version: str
    uptime_s: float
    requests_per_s: float
    requests_total: int
    hit_rate: float | None = None  # fleet engine-reported prefix-cache hit rate (token-weighted)
    predicted_hit_rate: float | None = None  # router's own prediction
    drift_ratio: float | None = None  # home moves / session requests in the window
    chars_per_token: float | None = None  # what prompt-token estimates use now (fleet-wide)
    chars_per_token_calibrated: bool = False  # learned from the engines' usage, not the default
    generated_at: float  # unix time of this snapshot
    state_store: str | None = None  # where operator state lives (no credentials)
    state_error: str | None = None  # set while the store cannot be reached: operator writes refused


class RouterStatus(_Model):
    """One router sharing the state store, from its latest heartbeat."""

    id: str  # host:pid
    url: str  # data-plane URL
    admin_url: str
    version: str
    started_at: float
    heartbeat_at: float
    heartbeat_age_s: float
    requests_per_s: float
    in_flight: int
    lost: bool  # silent for longer than the lost threshold: its load is no longer counted
    this_router: bool  # the router that answered


class StatusSnapshot(_Model):
    router: RouterInfo
    replicas: list[ReplicaStatus]
    all: ReplicaStatus  # the ALL row: sums, token-weighted hit rate, percentiles from merged buckets
    callouts: list[str] = Field(default_factory=list)  # e.g. "r3: KV usage 91%, fleet mean 40%"


# ---- replicas -----------------------------------------------------------------------------------


class ReplicaIn(_Input):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(min_length=1, max_length=2048)
    engine: str = "auto"
    group: str | None = None
    weight: float = Field(default=1.0, gt=0, le=1000)


class BlastRadius(_Model):
    """What draining (or removing) a replica affects; returned by drain with ``dry_run``."""

    class Tier1Move(_Model):
        prefix: str
        successors: list[str]

    replica: str
    state: ReplicaStateName
    in_flight: int
    sessions: int
    tier1: list[Tier1Move] = Field(default_factory=list)
    last_routable: bool = False
    dry_run: bool = False
    prewarm_job: str | None = None  # id of the successor prewarm job, when one was started
    handover: HandoverPrewarm | None = None  # how that prewarm went (failed pairs listed)


# ---- prefixes (heat map) ------------------------------------------------------------------------


class PrefixCell(_Model):
    requests: int = 0
    tokens: int = 0
    share: float = 0.0  # of this prefix's requests in the window served by this replica
    owner: bool = False
    pinned: bool = False


class PrefixRow(_Model):
    key: str  # hex of the prefix key
    name: str | None = None
    kind: Literal["registered", "pinned", "hot"]
    text_head: str | None = None  # first characters, for registered/pinned prefixes only
    tokens: int = 0  # prefix length in tokens
    sessions: int = 0  # distinct sessions seen in the window
    requests: int = 0
    hit_rate: float | None = None  # the ROUTER'S PREDICTION: predicted cached / prompt tokens
    owners: list[str] = Field(default_factory=list)
    by_replica: dict[str, PrefixCell] = Field(default_factory=dict)


class PrefixHeat(_Model):
    window_s: float
    replicas: list[str]
    prefixes: list[PrefixRow]


# ---- pins ---------------------------------------------------------------------------------------


class PinIn(_Input):
    # Without text, the registered Tier-1 prefix of that name is re-pinned with its own text.
    text: str | None = Field(default=None, min_length=1, max_length=1_000_000)
    replicas: list[str] | None = None
    copies: int | None = Field(default=None, ge=1, le=1024)
    group: str | None = None
    prewarm: bool = False
    as_: Literal["chat", "completion"] = Field(default="chat", alias="as")

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PinOut(_Model):
    name: str
    source: Literal["config", "pin", "auto", "prewarm"]  # prewarm: registered by a prewarm without pin
    text_head: str
    tokens: int
    replicas: list[str] = Field(default_factory=list)  # pinned replicas (empty: HRW top-k)
    copies: int = 1
    group: str | None = None
    owners: list[str] = Field(default_factory=list)  # where it is routed now
    prewarm_job: str | None = None


# ---- route explain ------------------------------------------------------------------------------


class ExplainRequest(_Input):
    body: dict[str, object]  # an OpenAI chat or completion request body
    headers: dict[str, str] = Field(default_factory=dict)
    session: str | None = None  # overrides the session key


class CandidateOut(_Model):
    replica: str
    score: float
    load: int
    excluded: str | None = None
    # Where this candidate's cache match came from (precise: its engine's KV events; approximate: the
    # router's guess), the cached tokens predicted there, and (precise) their split by storage medium.
    cache_source: str | None = None
    cached_tokens: int | None = None
    cached_tokens_by_medium: dict[str, int] = Field(default_factory=dict)


class DecisionOut(_Model):
    policy: str
    replica: str | None
    reason: str
    session: str | None = None
    session_source: str | None = None
    prefix_key: str | None = None
    tier1: str | None = None
    prompt_tokens: int = 0
    blocks: int = 0
    predicted_cached_tokens: int = 0  # in the chosen engine's accounting (its full KV blocks)
    prompt_chars: int = 0  # characters of the rendered prompt
    chars_per_token: float | None = None  # used for prompt_tokens: learned from the engines, or the default
    chars_per_token_calibrated: bool = False  # False: the configured default is still in use
    engine_block_size: int | None = None  # the chosen replica's KV block size
    drift_cause: str | None = None
    candidates: list[CandidateOut]
    engine_tokens: int | None = None  # the prompt in the engine's tokens, when the router had them


# ---- prewarm ------------------------------------------------------------------------------------


class PrewarmPrefix(_Input):
    name: str | None = None
    text: str = Field(min_length=1, max_length=1_000_000)
    copies: int | None = Field(default=None, ge=1, le=1024)
    replicas: list[str] | None = None


class PrewarmIn(_Input):
    prefixes: list[PrewarmPrefix] = Field(min_length=1, max_length=10_000)
    as_: Literal["chat", "completion"] = Field(default="chat", alias="as")
    copies: int | None = Field(default=None, ge=1, le=1024)  # default for prefixes without one
    replicas: list[str] | None = None  # default for prefixes without one
    pin: bool = False
    verify: bool = False
    concurrency: int = Field(default=8, ge=1, le=256)
    dry_run: bool = False
    # "pool": warm each prefix once, into the KV pool the replicas share (LMCache, Mooncake, the
    # simulator's --pool-blocks), and verify on another replica from its external-hit counters.
    tier: Literal["gpu", "pool"] = "gpu"

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class PrewarmPlanEntry(_Model):
    prefix: str
    replicas: list[str]
    why: str  # e.g. "pinned", "top-2 of HRW ranking", "explicit"


class PrewarmPair(_Model):
    prefix: str
    replica: str
    ok: bool | None = None  # None while pending
    cached_tokens: int | None = None
    verified: bool | None = None  # with verify: a second probe hit the cache
    # tier pool: the replica the probe went to (not the warmed one) and the tokens its engine
    # counted as loaded from outside its GPU (external hits) for the probe
    verified_on: str | None = None
    external_hit_tokens: int | None = None
    error: str | None = None
    duration_s: float | None = None


class PrewarmJob(_Model):
    id: str
    state: Literal["planned", "running", "done", "failed"]
    total: int
    done: int
    failed: int
    created_at: float
    finished_at: float | None = None
    plan: list[PrewarmPlanEntry] = Field(default_factory=list)
    results: list[PrewarmPair] = Field(default_factory=list)


class HandoverPrewarm(_Model):
    """The prewarm a drain, removal or scale-out ran before moving traffic, as the action ended.

    ``failed`` pairs did not warm (the successor will serve the prefix cold); ``unfinished`` pairs
    were still running when the action stopped waiting for them (``prewarm.handoff_wait_s``).
    """

    job: str
    total: int
    ok: int
    failed: list[PrewarmPair] = Field(default_factory=list)
    unfinished: int = 0

    @property
    def complete(self) -> bool:
        """Every pair warmed before traffic moved."""
        return not self.failed and not self.unfinished


# ---- drift --------------------------------------------------------------------------------------


class DriftPoint(_Model):
    t: float  # unix time at the window's end
    requests: int
    session_requests: int
    moves: int
    drift_ratio: float | None
    hit_rate: float | None  # fleet engine-reported, when known
    predicted_hit_rate: float | None = None


class DriftSeries(_Model):
    window_s: float  # width of one point
    points: list[DriftPoint]
    moves_by_cause: dict[str, int]


BlastRadius.model_rebuild()
ReplicaStatus.model_rebuild()


# ---- events -------------------------------------------------------------------------------------

EventKind = Literal[
    "drain",
    "undrain",
    "pin",
    "unpin",
    "prewarm",
    "replica_state",
    "replica_added",
    "replica_removed",
    "home_moves",
]


class RouterEvent(_Model):
    """One thing that happened in the router: an operator action, a result, a state change."""

    id: int  # increasing; poll with ``after`` = the last id seen
    t: float  # unix time it happened (a prewarm's finish, a burst's window end)
    kind: EventKind
    message: str
    replica: str | None = None
    prefix: str | None = None
    job: str | None = None
    ok: bool | None = None  # for outcomes: the prewarm warmed every pair, the replica came back


class EventList(_Model):
    events: list[RouterEvent]  # oldest first
    last_id: int  # the newest id the router has (0: none yet)
