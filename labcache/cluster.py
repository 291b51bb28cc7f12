"""Scaling out: labcache on a Redis Cluster, and a real local cluster to try it on.

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

`LocalCluster` starts a real cluster (redis-server processes on loopback ports) for the tests and
notebook 08, with a short node timeout so a killed primary's replica takes over in seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import shutil
import socket
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot as _key_slot
from redis.exceptions import RedisClusterException, RedisError

from labcache.backplane import Backplane
from labcache.embedded import FolderGuard, RedisServer, find_redis_server, free_port
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

    async def start(self, timeout: float = 5.0) -> None:
        cluster = cast(RedisCluster, self.redis)
        await primaries(cluster)  # routing a channel needs the slot map
        if self.sharded is None:
            self.sharded = await supports_sharded_pubsub(cluster)
        await super().start(timeout)

    async def publish(self, op: str, arg: list[str] | str) -> None:
        if not self.sharded:
            await super().publish(op, arg)
            return
        self.sequence += 1
        message = json.dumps({"src": self.instance_id, "seq": self.sequence, "op": op, "arg": arg})
        await self.redis.spublish(self.channel, message)

    async def _run(self) -> None:
        if not self.sharded:
            await super()._run()
            return
        backoff = 0.05
        lost = False
        while True:
            pubsub = cast(Any, self.redis).pubsub()
            try:
                await pubsub.ssubscribe(self.channel)
                confirmations = 0
                while True:
                    message = await pubsub.get_sharded_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message["type"]
                    kind = kind.decode() if isinstance(kind, bytes) else kind
                    if kind == "ssubscribe":
                        confirmations += 1
                        if confirmations > 1 or lost:  # moved to a new primary: we were deaf
                            lost = False
                            self._last_seen.clear()
                            self._reset("sharded pub/sub re-subscribed")
                        self._ready.set()
                        backoff = 0.05
                    elif kind == "smessage":
                        await self._apply(message["data"])
            except (RedisError, RedisClusterException, OSError, RuntimeError) as exc:
                # RuntimeError: redis-py's round-robin over per-node pubsubs found none left.
                lost = True
                self._ready.clear()
                self._reset(f"sharded pub/sub lost: {type(exc).__name__}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


async def supports_sharded_pubsub(client: RedisCluster) -> bool:
    """True when the cluster's servers know SPUBLISH (Redis 7.0+)."""
    node = (await primaries(client))[0]
    info = await client.info("server", target_nodes=node)
    version = str(info.get("redis_version", "0"))
    return tuple(int(n) for n in version.split(".")[:2]) >= (7, 0)


# -- a real local cluster --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it."""

    port: int
    node_id: str
    role: str  # "primary" or "replica"
    slots: tuple[tuple[int, int], ...]
    primary_of: str | None  # a replica's primary id
    alive: bool


class LocalCluster:
    """A real Redis Cluster of `primaries` x (1 + `replicas`) redis-server processes on loopback.

    `with LocalCluster() as cluster:` starts it, waits until every node reports
    `cluster_state:ok` and every replica is in sync, and stops it on exit (and at interpreter
    exit; if the process is killed instead, a `FolderGuard` ends the nodes and removes their
    folder). `kill_primary(key)` SIGKILLs the primary that owns a key, as a crash would.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 1000,
        full_coverage: bool = False,
        binary: str | None = None,
    ) -> None:
        if primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, not {primaries}")
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, not {replicas}")
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        # A cache prefers `no`: while one shard fails over, the others keep serving.
        self.full_coverage = full_coverage
        self.binary = binary or find_redis_server()
        self.servers: dict[int, RedisServer] = {}
        self.directory: Path | None = None
        self._guard: FolderGuard | None = None
        self.started_in = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start the processes, assign slots, join them, attach replicas; wait until healthy."""
        began = time.monotonic()
        self.servers = {}
        self.directory = Path(tempfile.mkdtemp(prefix="labcache-cluster-"))
        # atexit stops it at a normal exit; the guard when the process is killed (a kernel).
        self._guard = FolderGuard(self.directory)
        atexit.register(self.stop)
        try:
            for port in _cluster_ports(self.n_primaries * (1 + self.n_replicas)):
                self.servers[port] = self._server(port).start()
            self._create(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        logger.info("local cluster up in %.2f s: ports %s", self.started_in, list(self.servers))
        return self

    def stop(self) -> None:
        """Stop every node and remove the cluster's folder (idempotent)."""
        for server in self.servers.values():
            server.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.dismiss()
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and notebooks use --------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return list(self.servers)

    @property
    def url(self) -> str:
        """`redis+cluster://127.0.0.1:<port of a live node>`, what `labcache.connect` takes."""
        live = [p for p, s in self.servers.items() if s.running]
        if not live:
            raise RuntimeError("no node of the local cluster is running")
        return f"redis+cluster://127.0.0.1:{live[0]}"

    def client(self, **options: Any) -> RedisCluster:
        """A `redis.asyncio.RedisCluster` on this cluster (call `await client.aclose()`)."""
        return cluster_client(self.url.replace("redis+cluster", "redis", 1), **options)

    def nodes(self) -> list[NodeInfo]:
        """Every node, as a live node's CLUSTER NODES describes it."""
        return _parse_nodes(self._ask_any("CLUSTER", "NODES"), set(self.servers))

    def primary_for(self, slot_or_key: int | str | bytes) -> int:
        """The port of the live primary that serves a slot (or a key's slot) right now."""
        slot = slot_or_key if isinstance(slot_or_key, int) else key_slot(slot_or_key)
        for node in self.nodes():
            if node.role == "primary" and node.alive and _covers(node.slots, slot):
                return node.port
        raise RuntimeError(f"no live primary serves slot {slot} right now")

    def kill_primary(self, slot_or_key: int | str | bytes) -> int:
        """SIGKILL the primary that serves a slot or key (a crash); return its port."""
        port = self.primary_for(slot_or_key)
        self.servers[port].kill()
        logger.info("killed primary %d", port)
        return port

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every live node says cluster_state:ok, every slot has a live primary, and
        every live replica is in sync (after start, a failover or a restart)."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self._health_problem()
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"local cluster not healthy after {timeout}s: {problem}")
            time.sleep(0.02)

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again: it rejoins as a replica of whoever took over its slots."""
        self.servers[port].start()
        self.wait_healthy(timeout)

    # -- internals ---------------------------------------------------------------------------

    def _server(self, port: int) -> RedisServer:
        assert self.directory is not None
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.full_coverage else "no",
            # A replica syncs at once (the default waits 5 s for more replicas to share a sync).
            "--repl-diskless-sync-delay", "0",
            # CLUSTER SLOTS lists a replica once its offset moves: ping replicas every second.
            "--repl-ping-replica-period", "1",
        )  # fmt: skip
        directory = self.directory / str(port)
        return RedisServer(port=port, directory=directory, binary=self.binary, extra_args=args)

    def _sync(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, decode_responses=True)

    def _create(self, timeout: float) -> None:
        ports = self.ports
        primary_ports = ports[: self.n_primaries]
        ids: dict[int, str] = {}
        for i, port in enumerate(ports):
            with self._sync(port) as r:
                ids[port] = str(r.execute_command("CLUSTER", "MYID"))
                # Distinct epochs up front, as redis-cli does, so no collision needs resolving.
                r.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                if port in primary_ports:
                    j = primary_ports.index(port)
                    first, last = j * SLOTS // self.n_primaries, (j + 1) * SLOTS // self.n_primaries
                    r.execute_command("CLUSTER", "ADDSLOTS", *range(first, last))
        for i, port in enumerate(ports):  # a full mesh of MEETs: no waiting for gossip to spread
            with self._sync(port) as r:
                for other in ports[i + 1 :]:
                    r.execute_command("CLUSTER", "MEET", "127.0.0.1", other)
        self._wait(timeout, lambda: self._all_known(len(ports)), "nodes did not all meet")
        for k, port in enumerate(ports[self.n_primaries :]):
            primary = primary_ports[k % self.n_primaries]
            with self._sync(port) as r:
                r.execute_command("CLUSTER", "REPLICATE", ids[primary])
        self.wait_healthy(timeout)

    def _wait(self, timeout: float, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"local cluster: {what} within {timeout}s")
            time.sleep(0.02)

    def _all_known(self, n: int) -> bool:
        for port in self.ports:
            with self._sync(port) as r:
                lines = str(r.execute_command("CLUSTER", "NODES")).splitlines()
            if len(lines) < n or any("handshake" in line or "noaddr" in line for line in lines):
                return False
        return True

    def _health_problem(self) -> str | None:
        """None when healthy, else what is wrong (for the timeout message).

        Healthy: every running node says cluster_state:ok, sees every running node as alive,
        sees every slot served by a live primary and no primary without slots (a restarted node
        is a replica by then), and (if a replica) is in sync with it.
        """
        live = {p for p, s in self.servers.items() if s.running}
        for port in sorted(live):
            try:
                with self._sync(port) as r:
                    if "cluster_state:ok" not in str(r.execute_command("CLUSTER", "INFO")):
                        return f"node {port}: cluster_state is not ok"
                    view = _parse_nodes(r.execute_command("CLUSTER", "NODES"), live)
                    slot_map = r.execute_command("CLUSTER", "SLOTS")
                    replication = r.info("replication")
            except (RedisError, OSError) as exc:
                return f"node {port}: {type(exc).__name__}: {exc}"
            if {n.port for n in view if n.alive} != live:
                return f"node {port} does not see every running node as alive yet"
            served = sum(b - a + 1 for n in view if n.role == "primary" for a, b in n.slots)
            if served != SLOTS or any(n.slots and not n.alive for n in view):
                return f"node {port}: some slots have no live primary"
            if any(n.role == "primary" and not n.slots for n in view):  # a node rejoining
                return f"node {port} sees a primary with no slots (not yet a replica)"
            replicas = {n.primary_of for n in view if n.role == "replica" and n.alive}
            if sum(len(entry) - 3 for entry in slot_map) < sum(
                len(n.slots) for n in view if n.node_id in replicas
            ):
                return f"node {port}: CLUSTER SLOTS does not list every replica yet"
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
                or replication.get("master_sync_in_progress")
            ):
                return f"replica {port} is not in sync with its primary yet"
        return None

    def _ask_any(self, *command: Any) -> Any:
        for port, server in self.servers.items():
            if server.running:
                with contextlib.suppress(RedisError, OSError), self._sync(port) as r:
                    return r.execute_command(*command)
        raise RuntimeError("no node of the local cluster answers")


# -- a failover drill ------------------------------------------------------------------------


@dataclass
class FailoverReport:
    """What callers saw while a primary died and its replica took over."""

    killed_port: int
    requests: int = 0  # from the kill to the first hit on the dead primary's keys
    fallbacks: int = 0  # of those, served by the loader because Redis failed
    errors: int = 0  # exceptions that reached a caller (the target is 0)
    wrong_values: int = 0
    recovery_seconds: float | None = None
    timeline: list[tuple[float, str, bool]] = field(default_factory=list)  # (s, outcome, victim)

    def __str__(self) -> str:
        recovered = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        return (
            f"killed primary :{self.killed_port}; during failover {self.requests} requests, "
            f"{self.fallbacks} fallbacks, {self.errors} errors, {self.wrong_values} wrong "
            f"values; recovered in {recovered}"
        )


async def failover_drill(
    cluster: LocalCluster,
    cache: Any,
    keys: list[str],
    value_for: Callable[[str], Any],
    *,
    after: int = 100,
    pace: float = 0.005,
    timeout: float = 30.0,
    on_request: Callable[[float, str, bool], None] | None = None,
) -> FailoverReport:
    """Kill the primary of `keys[0]` mid-workload; read until its keys are hits again.

    `cache` is a MultiLevelCache (or CacheAside) on `cluster`; every key should be cached
    already. Reads skip L1, so each one reaches Redis. Recovery is the first L2 hit on a key
    the dead primary owned; `after` more requests then show the steady state.
    """
    owner = {n.port: n.slots for n in cluster.nodes() if n.role == "primary"}
    port = cluster.kill_primary(cache.key(keys[0]))
    report = FailoverReport(port)
    victims = {k for k in keys if _covers(owner[port], key_slot(cache.key(k)))}
    outcomes: list[str] = []
    unsubscribe = cache.events.subscribe(
        lambda e: outcomes.append(f"{e.kind}:{e.level}") if e.kind in _OUTCOMES else None
    )
    killed_at = time.monotonic()
    try:
        for i in itertools.count():
            key = keys[i % len(keys)]
            outcomes.clear()

            async def load(key: str = key) -> Any:
                return value_for(key)

            try:
                kwargs = {"skip_memory": True} if hasattr(cache, "l1") else {}
                value = await cache.get(key, load, **kwargs)
                outcome = outcomes[-1] if outcomes else "none"
                report.wrong_values += value != value_for(key)
            except Exception as exc:  # what the drill measures: nothing should get here
                logger.warning("failover drill: %s reached the caller: %s", key, exc)
                outcome = "error"
                report.errors += 1
            now = time.monotonic() - killed_at
            report.timeline.append((now, outcome, key in victims))
            if on_request is not None:
                on_request(now, outcome, key in victims)
            if report.recovery_seconds is None:
                report.requests += 1
                report.fallbacks += outcome.startswith("fallback")
                if key in victims and outcome == "hit:l2":
                    report.recovery_seconds = now
                    stop_at = i + after
            elif i >= stop_at:
                return report
            if now > timeout:
                raise TimeoutError(f"no hit on the dead primary's keys within {timeout}s: {report}")
            await asyncio.sleep(pace)
    finally:
        unsubscribe()
    raise AssertionError("unreachable")


_OUTCOMES = {"hit", "miss", "fallback", "stale"}


def _covers(ranges: tuple[tuple[int, int], ...], slot: int) -> bool:
    return any(first <= slot <= last for first, last in ranges)


def _parse_nodes(text: str, ours: set[int]) -> list[NodeInfo]:
    nodes = []
    for line in str(text).splitlines():
        fields = line.split()
        node_id, address, flags, primary = fields[0], fields[1], fields[2].split(","), fields[3]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):  # a slot being migrated
                continue
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        role = "primary" if "master" in flags else "replica"
        alive = not ({"fail", "fail?", "noaddr"} & set(flags)) and port in ours
        nodes.append(
            NodeInfo(port, node_id, role, tuple(slots), None if primary == "-" else primary, alive)
        )
    return sorted(nodes, key=lambda n: n.port)


def _cluster_ports(n: int) -> list[int]:
    """`n` free loopback ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port + 10000 > 65535 or port in ports or not _bindable(port + 10000):
            continue
        ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
