"""A real Redis Cluster on this machine, for the course: `LocalCluster` and a failover drill.

`LocalCluster` starts a real cluster (redis-server processes on loopback ports) for the tests and
notebook 08, with a short node timeout so a killed primary's replica takes over in seconds;
`failover_drill` kills a primary mid-workload and reports what callers saw. The library's cluster
support (slots, URLs, tags, the sharded backplane) is `labcache.cluster`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from labcache.cluster import SLOTS, cluster_client, key_slot
from labcache.embedded import FolderGuard, RedisServer, find_redis_server, free_port

logger = logging.getLogger(__name__)


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
