"""A real Redis Cluster on this machine, for the course: `LocalCluster` and a failover drill.

`LocalCluster` starts a real cluster (redis-server processes on loopback ports) for the tests and
notebook 08, with a short node timeout so a killed primary's replica takes over in seconds;
`failover_drill` (`labcache.lab.failover`, importable from here too) kills a primary mid-workload
and reports what callers saw. The library's cluster support (slots, URLs, tags, the sharded
backplane) is `labcache.cluster`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from labcache.cluster import SLOTS, cluster_client, key_slot
from labcache.embedded import FolderGuard, RedisServer, find_redis_server
from labcache.lab.cluster_nodes import NodeInfo, cluster_ports, covers, parse_nodes
from labcache.lab.failover import FailoverReport, failover_drill

logger = logging.getLogger(__name__)
__all__ = ["FailoverReport", "LocalCluster", "NodeInfo", "failover_drill"]


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
            for port in cluster_ports(self.n_primaries * (1 + self.n_replicas)):
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
    def guard(self) -> FolderGuard | None:
        """The `FolderGuard` that ends the nodes and removes `directory` should this process be
        killed; `stop()` dismisses it. None before `start()` and after `stop()`.
        """
        return self._guard

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
        return parse_nodes(self._ask_any("CLUSTER", "NODES"), set(self.servers))

    def primary_for(self, slot_or_key: int | str | bytes) -> int:
        """The port of the live primary that serves a slot (or a key's slot) right now."""
        slot = slot_or_key if isinstance(slot_or_key, int) else key_slot(slot_or_key)
        for node in self.nodes():
            if node.role == "primary" and node.alive and covers(node.slots, slot):
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
                    view = parse_nodes(r.execute_command("CLUSTER", "NODES"), live)
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
