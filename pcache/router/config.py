"""The router's YAML configuration: schema, defaults, and errors that name the field and its line.

``load_config(path)`` parses YAML with pyyaml, validates it with pydantic and, on failure, reports
each bad field as ``router.yaml:12: replicas[1].url: ...`` by walking yaml's node tree to the
offending key. Relative ``file:`` paths of Tier-1 prefixes resolve against the config's directory.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pcache.engines import ENGINES
from pcache.state.location import check_location

__all__ = [
    "AdminConfig",
    "ConfigError",
    "HealthConfig",
    "KvConfig",
    "KvEventsConfig",
    "OutlierConfig",
    "ReplicaConfig",
    "RouterConfig",
    "ScrapeConfig",
    "ServerConfig",
    "Tier1Config",
    "UpstreamConfig",
    "check_engine",
    "check_replica_url",
    "is_loopback",
    "load_config",
    "parse_config",
    "split_host_port",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is the full, line-numbered explanation."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(address: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:80"`` works too."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host.strip("[]"), number


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``; wildcard binds are not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_replica_url(url: str) -> str:
    """A replica's base URL, checked: http(s), a host, a valid port, no credentials, query or
    fragment, no whitespace or control characters. Returned without a trailing slash."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ValueError("has no host")
    if port == 0:
        raise ValueError("port 0 is not a valid replica port")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (they would be shown in status and logs)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("must not have a query or fragment")
    return url.rstrip("/")


def check_engine(engine: str) -> str:
    """A replica's engine: ``auto`` or one of the known adapters."""
    if engine != "auto" and engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected auto or one of {', '.join(ENGINES)}")
    return engine


def _check_address(value: str) -> str:
    split_host_port(value)
    return value


class AdminConfig(_Section):
    """The admin API listener and its bearer token (read from the named environment variable; when
    that is unset the router generates one, see :mod:`pcache.credentials`), and its body limit."""

    listen: str = "127.0.0.1:8081"
    token_env: str | None = "PCACHE_ADMIN_TOKEN"
    auth_reads: bool = False  # require the token for reads too
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)


class PolicyConfig(_Section):
    name: str = "tiered"
    params: dict[str, Any] = Field(default_factory=dict)


class KvEventsConfig(_Section):
    """A replica's KV-cache events, in the names of vLLM's ``--kv-events-config``. The router binds
    ``endpoint`` when it names a host (the engine connects to it) and connects when the engine binds
    (``*``, ``::``, ``ipc://``, ``inproc://``; a wildcard host means the replica's host)."""

    endpoint: str = Field(min_length=6)
    replay_endpoint: str | None = None
    topic: str = ""

    @field_validator("endpoint", "replay_endpoint")
    @classmethod
    def _zmq_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"expected a ZMQ address (tcp://, ipc:// or inproc://), got {value!r}")
        return value


class ReplicaConfig(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    url: str = Field(min_length=1)
    engine: str = "auto"
    group: str | None = None
    weight: float = Field(default=1.0, gt=0, le=1000)
    kv_events: KvEventsConfig | None = None

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        return check_engine(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_replica_url(value)


class Tier1Config(_Section):
    """A Tier-1 prefix: ``text`` or ``file``, routed to ``replicas`` (pinned) or to ``copies`` owners."""

    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    text: str | None = None
    file: str | None = None
    as_: Literal["chat", "completion"] = Field(default="chat", alias="as")
    group: str | None = None
    copies: int = Field(default=1, ge=1, le=1024)
    replicas: tuple[str, ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_source(self) -> Tier1Config:
        if (self.text is None) == (self.file is None):
            raise ValueError("give exactly one of text or file")
        if self.text is not None and not self.text:
            raise ValueError("text must not be empty")
        return self


class HealthConfig(_Section):
    """Active health checks: a replica is unhealthy after ``failures`` consecutive failed checks
    (or proxied requests), and healthy again after ``recoveries`` consecutive good checks."""

    path: str = "/health"
    interval_s: float = Field(default=2.0, gt=0, le=3600)
    # 5 s, not 1: on a CPU-starved machine a healthy replica's answer can take seconds, and a 1 s
    # limit marked all 8 healthy replicas unhealthy twice in a minute.
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    failures: int = Field(default=3, ge=1, le=100)
    recoveries: int = Field(default=2, ge=1, le=100)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/") or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"must be an absolute path such as /health, got {value!r}")
        return value


class ScrapeConfig(_Section):
    """``/metrics`` scraping through the engine adapters."""

    interval_s: float = Field(default=2.0, gt=0, le=3600)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    stale_after_s: float = Field(default=15.0, gt=0)
    max_bytes: int = Field(default=8 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024)  # one /metrics page


class UpstreamConfig(_Section):
    """The hop to the replicas: pooled client, timeouts, retry budget and request limits."""

    client: Literal["httpx", "aiohttp"] = "aiohttp"
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    read_timeout_s: float = Field(default=600.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)  # extra attempts on other candidates, per request
    # A timed-out request may still be running on its replica: retrying it runs it twice and makes
    # the client wait a multiple of read_timeout_s. Off by default: time out at the limit (504).
    retry_on_timeout: bool = False
    max_connections: int = Field(default=1024, ge=1)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # A non-streamed answer up to this size is buffered (retry on a mid-body failure, usage read);
    # a larger one is passed through as it arrives.
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class OutlierConfig(_Section):
    """Passive outlier detection (:mod:`pcache.router.outlier`); ``consecutive_failures: 0`` disables it."""

    consecutive_failures: int = Field(default=5, ge=0, le=1000)
    base_ejection_s: float = Field(default=30.0, gt=0, le=3600)
    max_ejection_s: float = Field(default=300.0, gt=0, le=86400)
    max_ejected_fraction: float = Field(default=0.5, gt=0, le=1)


class ServerConfig(_Section):
    """The listeners' connection handling (see :mod:`pcache.router.server`)."""

    head_timeout_s: float = Field(default=10.0, gt=0, le=600)  # a request head must arrive by then
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # the longest wait for body bytes
    keep_alive_s: int = Field(default=30, ge=1, le=3600)  # idle keep-alive connections close after
    max_connections: int | None = Field(default=None, ge=1)  # per listener; default: from the fd limit
    # Completion bodies at least this large are parsed in a worker process, off the event loop.
    offload_bytes: int = Field(default=512 * 1024, ge=1024)


class PrewarmConfig(_Section):
    """Prewarm requests, and how long drain / add / remove / pin wait for theirs before acting
    (``handoff_wait_s``: traffic moves after it even if the job still runs; the job id is returned)."""

    concurrency: int = Field(default=8, ge=1, le=256)
    timeout_s: float = Field(default=120.0, gt=0)  # one prewarm request
    handoff_wait_s: float = Field(default=4.0, ge=0, le=3600)
    model: str | None = None  # model name sent with prewarm requests; default: the replica's first


class HotPrefixConfig(_Section):
    """Hot prefixes (seen from many distinct sessions) shown in the heat map as Tier-1 candidates.
    Routing them is the policy's business (``tiered`` detects hot prefixes itself)."""

    min_sessions: int = Field(default=4, ge=2)


class KvConfig(_Section):
    """The precise index: medium weights (a block on CPU is worth less than one on GPU), the bound
    on each replica's index, the timeout of the engine ``/tokenize`` fallback."""

    medium_weights: dict[str, float] = Field(default_factory=lambda: {"GPU": 1.0, "CPU": 0.8})
    max_blocks_per_replica: int = Field(default=1_000_000, ge=1)
    tokenize_timeout_s: float = Field(default=2.0, gt=0, le=60)


class RouterConfig(_Section):
    listen: str = "127.0.0.1:8080"
    # Client API keys for the data plane: the named environment variable holds them,
    # comma-separated. Unset or empty: no key needed (the listener is on loopback by default).
    api_keys_env: str | None = None
    admin: AdminConfig = AdminConfig()
    policy: PolicyConfig = PolicyConfig()
    fingerprint: dict[str, Any] = Field(default_factory=dict)  # pcache.prompt.FingerprintConfig fields
    replicas: tuple[ReplicaConfig, ...] = ()
    tier1: tuple[Tier1Config, ...] = ()
    health: HealthConfig = HealthConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    server: ServerConfig = ServerConfig()
    outlier: OutlierConfig = OutlierConfig()
    prewarm: PrewarmConfig = PrewarmConfig()
    hot_prefixes: HotPrefixConfig = HotPrefixConfig()
    kv: KvConfig = KvConfig()
    # Per served model name, a local directory with its tokenizer.json and chat template: requests are
    # tokenized in the router as the engine does (else through the engine's /tokenize).
    tokenizers: dict[str, str] = Field(default_factory=dict)
    state: str = "memory://"  # a sqlite file path, "sqlite:///path", "memory://" or "redis://host:port/db"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    base_dir: str = "."  # set by load_config: where relative paths resolve
    _where: Callable[[tuple[int | str, ...]], str] | None = PrivateAttr(default=None)

    def where(self, *loc: int | str) -> str:
        """``file:line`` of a field (``where("policy", "name")``), as far as the YAML tells;
        ``""`` for a config not read from a file."""
        return self._where(loc) if self._where is not None else ""

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("state")
    @classmethod
    def _state_location(cls, value: str) -> str:
        return check_location(value)

    def api_keys(self) -> tuple[str, ...]:
        """The data-plane client keys from the environment (empty: no key needed)."""
        if not self.api_keys_env:
            return ()
        raw = os.environ.get(self.api_keys_env, "")
        return tuple(key.strip() for key in raw.split(",") if key.strip())

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        names = [r.name for r in self.replicas]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate replica names: {', '.join(duplicates)}")
        prefixes = [t.name for t in self.tier1]
        duplicates = sorted({n for n in prefixes if prefixes.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate tier1 names: {', '.join(duplicates)}")
        known = set(names)
        for prefix in self.tier1:
            unknown = [r for r in prefix.replicas if r not in known]
            if unknown:
                raise ValueError(f"tier1 {prefix.name!r} pins unknown replicas: {', '.join(unknown)}")
        return self

    def tier1_text(self, prefix: Tier1Config) -> str:
        """The prefix's text, reading ``file`` relative to the config's directory."""
        if prefix.text is not None:
            return prefix.text
        assert prefix.file is not None
        path = Path(prefix.file)
        if not path.is_absolute():
            path = Path(self.base_dir) / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"tier1 {prefix.name!r}: cannot read {path}: {exc.strerror}") from exc
        if not text:
            raise ConfigError(f"tier1 {prefix.name!r}: {path} is empty")
        return text

    def state_location(self) -> str:
        """The state location with a relative file path resolved against the config's directory."""
        location = self.state
        if "://" in location and not location.startswith("sqlite:///"):
            return location
        raw = location.removeprefix("sqlite://")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path(self.base_dir) / path
        return str(path)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk a composed YAML node tree along a pydantic error location; return a 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part or (part == "as_" and key.value == "as"):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if part.isprintable() else repr(part)  # a key with a newline must not split lines
            text += ("." if text else "") + ("as" if part == "as_" else name)
    return text or "(top level)"


def parse_config(text: str, source: str = "<config>", base_dir: str = ".") -> RouterConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` naming each bad field and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, yaml.reader.ReaderError):  # a forbidden character: no mark, a position
            where = f"{source}:{text.count(chr(10), 0, exc.position) + 1}"
            problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    except RecursionError:  # pyyaml composes recursively: hostile nesting must not escape untyped
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping of fields")
    duplicates = _duplicate_keys(node)
    if duplicates:
        raise ConfigError("\n".join(f"{source}:{line}: {problem}" for line, problem in duplicates))
    data.setdefault("base_dir", base_dir)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {_format_loc(loc)}: {message}")
        raise ConfigError("\n".join(lines)) from None

    def locate(loc: tuple[int | str, ...]) -> str:
        line = _line_of(node, loc)
        return f"{source}:{line}" if line else source

    config._where = locate
    return config


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    """(line, problem) for every mapping key given twice (YAML keeps the last one silently)."""
    found: list[tuple[int, str]] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in current.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        found.append(
                            (line, f"duplicate key {key.value!r} (first given on line {seen[key.value]})")
                        )
                    else:
                        seen[key.value] = line
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return sorted(found)


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Read, parse and validate a router config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config {file}: not UTF-8 text ({exc.reason})") from None
    return parse_config(text, source=str(file), base_dir=str(file.resolve().parent))
