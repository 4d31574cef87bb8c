"""Operator state in Redis (or Valkey): one store shared by every router of a fleet.

Each write is one Lua script, so its check (a drain guard), its change, the version bump and the
change notice happen atomically on the server: two routers draining the last two routable replicas
at once cannot both succeed. Every write ``PUBLISH``es the new version on the store's channel;
routers wait on it (:meth:`RedisStateStore.wait_change`) and also compare :meth:`version` at a
short interval, which repairs a missed message. Keys live under one prefix (``pcache`` unless the
URL says ``?prefix=NAME``)::

    {prefix}:tier1     hash  name -> JSON Tier1Record
    {prefix}:drains    hash  replica -> draining | drained
    {prefix}:replicas  hash  name -> JSON ReplicaRecord (added at run time)
    {prefix}:removed   set   replicas removed at run time
    {prefix}:version   int   bumped by every write
    {prefix}:changes   pub/sub channel: the new version
    {prefix}:routers   hash  router id -> JSON RouterRecord (heartbeats; not operator state)
    {prefix}:homes     pub/sub channel: JSON {"origin": id, "homes": [[session, replica], ...]}
    {prefix}:lease:{name}  string  the holder of a background job's lease (expires unless renewed)

Session homes travel only as change notices (a router that starts later learns a session's home
from the session's next turn elsewhere, or routes it by HRW like the others): nothing on the
request path waits for Redis, and the store holds nothing that grows with the number of sessions.

A store that cannot be reached raises :class:`StateError` (503, ``state_unavailable``) at once
(one immediate retry on a fresh connection, no back-off), so an operator's write fails fast and
clearly rather than being acknowledged and lost, and the router keeps serving with the state it
last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pcache.state.model import (
    OperatorState,
    ReplicaRecord,
    RouterRecord,
    StateError,
    Tier1Record,
    check_drain_state,
    last_routable_error,
    router_from_json,
    router_to_json,
)

__all__ = ["RedisStateStore", "redacted"]

_TIMEOUT_S = 1.0

# KEYS = tier1, drains, replicas, removed, version; ARGV[1] = the change channel.
_BUMP = "local v = redis.call('INCR', KEYS[5]) redis.call('PUBLISH', ARGV[1], v) "
_GUARD = """
local free = #ARGV < FIRST
for i = FIRST, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 and redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 0 then
    free = true
    break
  end
end
if not free then return 0 end
"""
_PUT_TIER1 = "redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) " + _BUMP + "return 1"
_DELETE_TIER1 = "if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end " + _BUMP + "return 1"
_UNDRAIN = "redis.call('HDEL', KEYS[2], ARGV[2]) " + _BUMP + "return 1"
_DRAIN = _GUARD.replace("FIRST", "4") + "redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) " + _BUMP + "return 1"
_PUT_REPLICA = (
    "redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) redis.call('SREM', KEYS[4], ARGV[2]) " + _BUMP + "return 1"
)
# KEYS[1] = the lease; ARGV = holder, ttl in ms. Take it when free, renew it when ours.
_HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_LEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1"
_REMOVE_REPLICA = (
    _GUARD.replace("FIRST", "3")
    + "redis.call('HDEL', KEYS[3], ARGV[2]) redis.call('HDEL', KEYS[2], ARGV[2]) "
    + "redis.call('SADD', KEYS[4], ARGV[2]) "
    + _BUMP
    + "return 1"
)


def redacted(url: str) -> str:
    """The URL without its password, for messages and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _split_prefix(url: str) -> tuple[str, str]:
    """``(url without ?prefix=, prefix)``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "pcache") or "pcache"
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisStateStore:
    """Operator state shared through a Redis/Valkey server (``redis://host:port/db``)."""

    def __init__(self, url: str) -> None:
        self.location = redacted(url)
        self.shared = True
        plain, prefix = _split_prefix(url)
        self.prefix = prefix
        try:
            self._redis: aioredis.Redis = aioredis.Redis.from_url(
                plain,
                decode_responses=True,
                socket_timeout=_TIMEOUT_S,
                socket_connect_timeout=_TIMEOUT_S,
                # One immediate retry: after a Redis restart a pooled connection is stale, and the
                # retry takes a fresh one; with Redis down both attempts fail fast (refused).
                retry=Retry(NoBackoff(), 1),
                retry_on_timeout=False,
            )
        except ValueError as exc:
            raise StateError(f"state: {self.location}: {exc}") from exc
        self._keys = [f"{prefix}:{k}" for k in ("tier1", "drains", "replicas", "removed", "version")]
        self.channel = f"{prefix}:changes"
        self._routers_key = f"{prefix}:routers"
        self._homes_channel = f"{prefix}:homes"
        self._homes_sub: PubSub | None = None
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("put_tier1", _PUT_TIER1),
                ("delete_tier1", _DELETE_TIER1),
                ("undrain", _UNDRAIN),
                ("drain", _DRAIN),
                ("put_replica", _PUT_REPLICA),
                ("remove_replica", _REMOVE_REPLICA),
            )
        }
        self._pubsub: PubSub | None = None
        self._hold = self._redis.register_script(_HOLD_LEASE)
        self._release = self._redis.register_script(_RELEASE_LEASE)

    def _unreachable(self, exc: Exception) -> StateError:
        return StateError(
            f"state store {self.location} is unreachable ({exc.__class__.__name__}: {exc}); "
            "nothing was changed, retry when it is back",
            status=503,
            code="state_unavailable",
            retry_after=1,
        )

    async def _call(self, script: str, *args: Any) -> int:
        try:
            result = await self._scripts[script](keys=self._keys, args=[self.channel, *args])
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        return int(result)

    # ---- reading --------------------------------------------------------------------------------

    async def load(self) -> OperatorState:
        tier1_key, drains_key, replicas_key, removed_key, _ = self._keys
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(tier1_key)
                pipe.hgetall(drains_key)
                pipe.hgetall(replicas_key)
                pipe.smembers(removed_key)
                tier1_raw, drains, replicas_raw, removed = await pipe.execute()
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        try:
            tier1 = {}
            for name, raw in sorted(tier1_raw.items()):
                fields = json.loads(raw)
                fields["replicas"] = tuple(fields.get("replicas", ()))
                tier1[name] = Tier1Record(**fields)
            replicas = {name: ReplicaRecord(**json.loads(raw)) for name, raw in sorted(replicas_raw.items())}
        except (ValueError, TypeError) as exc:
            raise StateError(f"state store {self.location} holds a malformed record: {exc}") from exc
        return OperatorState(
            tier1=tier1, drains=dict(sorted(drains.items())), replicas=replicas, removed=frozenset(removed)
        )

    async def version(self) -> int:
        try:
            raw = await self._redis.get(self._keys[4])
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        return int(raw or 0)

    async def wait_change(self, timeout_s: float) -> None:
        try:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(self.channel)
            message = await self._pubsub.get_message(timeout=timeout_s)
            while message is not None:  # coalesce a burst of writes into one reload
                message = await self._pubsub.get_message(timeout=0)
        except (RedisError, OSError) as exc:
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                await _quietly_close(pubsub)
            await asyncio.sleep(timeout_s)
            raise self._unreachable(exc) from exc

    # ---- writing --------------------------------------------------------------------------------

    async def put_tier1(self, record: Tier1Record) -> None:
        fields = asdict(record)
        fields["replicas"] = list(record.replicas)
        await self._call("put_tier1", record.name, json.dumps(fields))

    async def delete_tier1(self, name: str) -> bool:
        return await self._call("delete_tier1", name) == 1

    async def set_drain(
        self, replica: str, state: str | None, *, keep_routable: Collection[str] = ()
    ) -> None:
        check_drain_state(state)
        if state is None:
            await self._call("undrain", replica)
        elif not await self._call("drain", replica, state, *sorted(keep_routable)):
            raise last_routable_error(replica, "draining")

    async def put_replica(self, record: ReplicaRecord) -> None:
        await self._call("put_replica", record.name, json.dumps(asdict(record)))

    async def remove_replica(self, name: str, *, keep_routable: Collection[str] = ()) -> None:
        if not await self._call("remove_replica", name, *sorted(keep_routable)):
            raise last_routable_error(name, "removing")

    # ---- membership -----------------------------------------------------------------------------

    async def heartbeat(self, record: RouterRecord, forget_after_s: float) -> None:
        try:
            await self._redis.hset(self._routers_key, record.id, router_to_json(record))
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        stale = [r.id for r in await self.routers() if r.heartbeat_at < record.heartbeat_at - forget_after_s]
        if stale:
            await self.leave(*stale)

    async def routers(self) -> list[RouterRecord]:
        try:
            raw = await self._redis.hgetall(self._routers_key)
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        records = (router_from_json(str(value)) for _, value in sorted(raw.items()))
        return [r for r in records if r is not None]

    async def leave(self, *router_ids: str) -> None:
        try:
            await self._redis.hdel(self._routers_key, *router_ids)
        except RedisError as exc:
            raise self._unreachable(exc) from exc

    # ---- leases ---------------------------------------------------------------------------------

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        try:
            held = await self._hold(keys=[f"{self.prefix}:lease:{name}"], args=[holder, int(ttl_s * 1000)])
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        return int(held) == 1

    async def release_lease(self, name: str, holder: str) -> None:
        try:
            await self._release(keys=[f"{self.prefix}:lease:{name}"], args=[holder])
        except RedisError as exc:
            raise self._unreachable(exc) from exc

    # ---- session homes --------------------------------------------------------------------------

    async def publish_homes(self, origin: str, homes: Sequence[tuple[str, str]]) -> None:
        payload = json.dumps({"origin": origin, "homes": [list(h) for h in homes]}, separators=(",", ":"))
        try:
            await self._redis.publish(self._homes_channel, payload)
        except RedisError as exc:
            raise self._unreachable(exc) from exc

    async def next_homes(self, timeout_s: float) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        try:
            if self._homes_sub is None:
                self._homes_sub = self._redis.pubsub(ignore_subscribe_messages=True)
                await self._homes_sub.subscribe(self._homes_channel)
            message = await self._homes_sub.get_message(timeout=timeout_s)
            while message is not None:
                out.extend(_homes_of(message.get("data")))
                message = await self._homes_sub.get_message(timeout=0)
        except (RedisError, OSError) as exc:
            sub, self._homes_sub = self._homes_sub, None
            if sub is not None:
                await _quietly_close(sub)
            await asyncio.sleep(timeout_s)
            raise self._unreachable(exc) from exc
        return out

    async def reset(self) -> int:
        """Delete every key of this store's prefix (``--reset-state``); return how many went."""
        try:
            return int(await self._redis.delete(*self._keys, self._routers_key))
        except RedisError as exc:
            raise self._unreachable(exc) from exc

    async def close(self) -> None:
        for sub in (self._pubsub, self._homes_sub):
            if sub is not None:
                await _quietly_close(sub)
        self._pubsub = self._homes_sub = None
        await self._redis.aclose()


async def _quietly_close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()


def _homes_of(data: object) -> list[tuple[str, str, str]]:
    """(origin, session, replica) from one homes notice; a malformed notice is ignored."""
    if not isinstance(data, (str, bytes)):
        return []
    try:
        notice = json.loads(data)
        origin = notice["origin"]
        return [(str(origin), str(session), str(replica)) for session, replica in notice["homes"]]
    except (ValueError, TypeError, KeyError):
        return []
