"""Scaling out: labcache on a Redis Cluster.

A cluster splits the keyspace into 16384 hash slots spread over several primaries; each key lives
in the slot `CRC16(key) % 16384` (or of its `{hash tag}`). redis-py's `RedisCluster` routes every
single-key command to the right primary, so cache-aside, multi-level caching, locks, generation
counters and pipelined warming work unchanged. What does not is anything that touches several
keys at once on the server, and anything that assumes one keyspace:

- a multi-key command or Lua script whose keys live in different slots fails with CROSSSLOT
  (redis-py refuses such a script before sending it); `UNLINK a b c` is split per slot by redis-py;
- SCAN walks one node: pattern invalidation must walk every primary (`scan_pages`);
- tags: the tag set and its members live in different slots, so the single-node Lua scripts of
  `labcache.multilevel` cannot run. Here a tagged write is two steps, `SET member` and then
  `SADD tag member` (`set_with_tags`), and invalidation takes the tag set atomically (SMEMBERS +
  DEL in one single-key script), then UNLINKs the members grouped per slot (`invalidate_tag`).
  The window: an `invalidate_tag` that runs between a write's SET and its SADD misses that member,
  which then lives until its TTL or until the tag's next invalidation (the SADD still lands, so
  the next one catches it). Keys that must be dropped atomically together should share a hash tag
  (`{customer:42}:policy:7`): then one slot holds them all and the single-node scripts apply;
- the backplane uses sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7+): a message goes to the one
  shard that owns the channel instead of being broadcast to every node; on Redis 6 it falls back
  to classic PUBLISH, which a cluster broadcasts everywhere;
- server-assisted tracking is per node (a connection tracks the keys of the node it talks to):
  it raises `ClusterUnsupported` instead of silently missing two thirds of the writes.

A real cluster to try it on, `LocalCluster`, is the course's: `labcache.lab.local_cluster`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot as _key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from labcache.backplane import Backplane
from labcache.errors import LabcacheError

logger = logging.getLogger(__name__)

SLOTS = 16384
# What labcache's classes are given: one server's client or a cluster's (same command API).
Client = aioredis.Redis | RedisCluster
_TRUE = {"1", "true", "yes", "on"}

# A tag set lives as long as its longest-lived member (ARGV[1] = PX, then the members).
_TAG_ADD = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""
# Take a tag set atomically: a member added after this lands in a new set, never lost.
_TAG_TAKE = """
local members = redis.call('SMEMBERS', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
return {pttl, members}
"""


class ClusterUnsupported(LabcacheError, RuntimeError):
    """A feature that cannot work on a Redis Cluster; the message says why."""


TRACKING_UNSUPPORTED = (
    "server-assisted tracking is not supported on a cluster yet: CLIENT TRACKING is per node, so "
    "one tracking connection would hear about the writes to a third of the keys only. Use the "
    "backplane (on by default) for invalidations made through labcache, and short memory TTLs "
    "for writes made outside it."
)


def is_cluster(client: object) -> bool:
    """True for a `redis.asyncio.RedisCluster` (the hooks below switch on it)."""
    return isinstance(client, RedisCluster)


def key_slot(key: str | bytes) -> int:
    """The hash slot (0..16383) of a key, honouring `{hash tags}`, as the server computes it."""
    return int(_key_slot(key.encode() if isinstance(key, str) else key))


def group_by_slot(keys: Iterable[str | bytes]) -> dict[int, list[str | bytes]]:
    """Keys grouped by hash slot: a multi-key command is valid within one group only."""
    groups: dict[int, list[str | bytes]] = defaultdict(list)
    for key in keys:
        groups[key_slot(key)].append(key)
    return dict(groups)


# -- connecting ------------------------------------------------------------------------------


def cluster_requested(env: Mapping[str, str]) -> bool:
    """True when LABCACHE_CLUSTER asks for a cluster client whatever the URL says."""
    return env.get("LABCACHE_CLUSTER", "").lower() in _TRUE


def split_cluster_url(url: str, env: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """`(plain_url, wants_cluster)`: `redis+cluster://`, `?cluster=true` or LABCACHE_CLUSTER=1."""
    parts = urlsplit(url)
    scheme, wants = parts.scheme, False
    if scheme.endswith("+cluster"):
        scheme, wants = scheme.removesuffix("+cluster"), True
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == "cluster"]
    if flags:
        wants = wants or flags[-1].lower() in _TRUE
        query = [(k, v) for k, v in query if k != "cluster"]
    wants = wants or cluster_requested(env or {})
    if (scheme, query) == (parts.scheme, parse_qsl(parts.query, keep_blank_values=True)):
        return url, wants
    tail = f"?{urlencode(query)}" if query else ""
    tail += f"#{parts.fragment}" if parts.fragment else ""
    return f"{scheme}://{parts.netloc}{parts.path}{tail}", wants


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A `RedisCluster` for a plain `redis://host:port` URL of any node (not connected yet).

    When a primary dies, each command sent to it fails with ConnectionError; redis-py then
    reloads the whole slot map (CLUSTER SLOTS, ~16k slots walked in Python: tens of ms of
    event-loop time) and retries, with no pause, as many times as its Retry allows (3 by
    default). Until the replica is promoted every attempt fails the same way, so a cache pays
    that reload per attempt and then falls back anyway. One retry is the sensible setting: it
    heals a stale slot map after the failover transparently, and during it costs half of what
    three do per failing request (`retry=` overrides it).
    """
    if urlsplit(url).scheme == "unix":
        raise ValueError("a Redis Cluster is reached over TCP: use redis://host:port, not unix://")
    options.setdefault("socket_timeout", 2.0)  # a hung primary fails a request, not the caller
    if "cluster_error_retry_attempts" not in options:
        options.setdefault("retry", Retry(NoBackoff(), 1))
    return RedisCluster.from_url(url, **options)


async def primaries(client: RedisCluster) -> list[Any]:
    """The cluster's primaries (redis-py ClusterNode objects), loading the slot map if needed."""
    if not client.get_nodes():
        await client.initialize()
    return list(client.get_primaries())


# -- keyspace walks --------------------------------------------------------------------------


async def scan_pages(
    client: aioredis.Redis | RedisCluster, match: str, *, count: int = 1000
) -> AsyncIterator[list[bytes]]:
    """SCAN pages of keys matching a glob: one node's keyspace, or every primary's on a cluster.

    `RedisCluster.scan_iter` also visits every primary (redis-py 5+), but yields one key at a
    time; pages keep the UNLINKs batched. Replicas are skipped: they hold copies, not keys.
    """
    if not is_cluster(client):
        cursor = 0
        while True:
            cursor, page = await client.scan(cursor=cursor, match=match, count=count)
            if page:
                yield cast(list[bytes], page)
            if cursor == 0:
                return
    cluster = cast(RedisCluster, client)
    try:
        async for keys in _walk_primaries(cluster, match, count):
            yield keys
    except (RedisConnectionError, RedisTimeoutError):
        # A SCAN sent to one node is not retried on another: after a failover, a client whose
        # slot map predates it still names the dead primary. Reload the map and walk again
        # (keys already yielded may come again: every caller's work on them is idempotent).
        await cluster.nodes_manager.initialize()
        async for keys in _walk_primaries(cluster, match, count):
            yield keys


async def _walk_primaries(
    cluster: RedisCluster, match: str, count: int
) -> AsyncIterator[list[bytes]]:
    for node in await primaries(cluster):
        cursor = 0
        while True:
            # On a cluster, SCAN answers ({node name: next cursor}, keys).
            cursors, page = await cluster.scan(
                cursor=cursor, match=match, count=count, target_nodes=node
            )
            cursor = int(cast(dict[str, int], cursors)[node.name])
            if page:
                yield cast(list[bytes], page)
            if cursor == 0:
                break


# -- tags without cross-slot scripts ---------------------------------------------------------


async def set_with_tags(
    client: Client, full: str, data: bytes, px: int, tag_keys: list[str]
) -> None:
    """SET the member, then add it to each tag set (SET first: see the module doc's window)."""
    await client.set(full, data, px=px)
    add = client.register_script(_TAG_ADD)
    for tag_key in tag_keys:
        await add(keys=[tag_key], args=[px, full])


async def invalidate_tag(client: Client, tag_key: str, *, batch: int = 1000) -> list[bytes]:
    """Take the tag set (atomically), UNLINK its members grouped per slot; return the members.

    If an UNLINK fails, the members are put back in the tag set before the error propagates,
    so that retrying the invalidation still finds them.
    """
    take = client.register_script(_TAG_TAKE)
    pttl, members = await take(keys=[tag_key])
    members = list(members)
    try:
        for i in range(0, len(members), batch):
            await client.unlink(*members[i : i + batch])  # redis-py sends one UNLINK per slot
    except (RedisError, RedisClusterException, OSError):
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            add = client.register_script(_TAG_ADD)
            for i in range(0, len(members), batch):
                await add(keys=[tag_key], args=[max(int(pttl), 1000), *members[i : i + batch]])
        raise
    return members


# -- the backplane over sharded pub/sub ------------------------------------------------------


class ClusterBackplane(Backplane):
    """The backplane on a cluster: sharded pub/sub where the server has it (Redis 7+).

    SPUBLISH sends a message to the nodes of the one shard that owns the channel's slot, and
    SSUBSCRIBE listens there; redis-py moves the subscription to the new primary after a
    failover (and this listener flushes L1, since messages may have been lost meanwhile).
    Classic PUBLISH also works on a cluster, but every node forwards every message to every
    other node: its cost grows with the cluster.
    """

    sharded: bool | None = None  # decided at start(): does the server know SPUBLISH?
    # RuntimeError: redis-py's round-robin over per-node pubsubs found none left.
    failures = (*Backplane.failures, RuntimeError)

    async def start(self, timeout: float = 5.0) -> None:
        cluster = cast(RedisCluster, self.redis)
        await primaries(cluster)  # routing a channel needs the slot map
        if self.sharded is None:
            self.sharded = await supports_sharded_pubsub(cluster)
        self.transport = "sharded pub/sub" if self.sharded else "pub/sub"
        await super().start(timeout)

    async def publish(self, op: str, arg: list[str] | str) -> None:
        if not self.sharded:
            await super().publish(op, arg)
            return
        self.sequence += 1
        message = json.dumps({"src": self.instance_id, "seq": self.sequence, "op": op, "arg": arg})
        await self.redis.spublish(self.channel, message)

    async def _subscribe(self, pubsub: Any) -> None:
        if not self.sharded:
            await super()._subscribe(pubsub)
            return
        await pubsub.ssubscribe(self.channel)

    async def _read(self, pubsub: Any) -> dict[str, Any] | None:
        if not self.sharded:
            return await super()._read(pubsub)
        message: dict[str, Any] | None = await pubsub.get_sharded_message(timeout=1.0)
        return message


async def supports_sharded_pubsub(client: RedisCluster) -> bool:
    """True when the cluster's servers know SPUBLISH (Redis 7.0+)."""
    node = (await primaries(client))[0]
    info = await client.info("server", target_nodes=node)
    version = str(info.get("redis_version", "0"))
    return tuple(int(n) for n in version.split(".")[:2]) >= (7, 0)
