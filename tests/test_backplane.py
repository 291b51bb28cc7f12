"""The pub/sub backplane: an invalidation anywhere evicts every other instance's L1 (mistake 5).

Other processes included: a peer `MultiLevelCache` runs in a child Python process and reports
what it does as JSON lines. Nothing here sleeps and hopes: every wait is for a message, an event
or a line, with a timeout that only fires when something is broken.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.events import EVICT, CacheEvent
from labcache.multilevel import MultiLevelCache
from tests.helpers import Loader

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0

# The peer: one MultiLevelCache in its own process. It reads commands on stdin and prints one JSON
# line per answer, plus one per L1 eviction (with its wall-clock time, to time propagation).
PEER = r"""
import asyncio, json, sys, time
import redis.asyncio as aioredis
from labcache.multilevel import MultiLevelCache

def say(**fields):
    print(json.dumps(fields), flush=True)

async def main(url, namespace):
    client = aioredis.from_url(url)
    cache = MultiLevelCache(client, namespace=namespace)
    loads = 0

    async def loader():
        nonlocal loads
        loads += 1
        return f"loaded-by-peer-{loads}"

    levels = []

    def on_event(event):
        if event.kind == "evict":
            say(op="evict", key=event.key, detail=event.detail, t=time.time())
        elif event.kind in ("hit", "miss"):
            levels.append(event.level)

    cache.events.subscribe(on_event)
    await cache.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    say(op="ready", id=cache.backplane.instance_id)
    while line := await reader.readline():
        cmd, _, arg = line.decode().strip().partition(" ")
        if cmd == "get":
            value = await cache.get(arg, loader)
            say(op="get", key=arg, value=value, level=levels[-1])
        elif cmd == "wait":
            await cache.backplane.wait_received(int(arg), timeout=10)
            say(op="waited", received=cache.backplane.received)
        elif cmd == "stats":
            bp = cache.backplane
            say(op="stats", received=bp.received, resets=bp.resets, l1=sorted(cache.l1.keys()))
        elif cmd == "quit":
            break
    await cache.close()
    await client.aclose()
    say(op="bye")

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Peer:
    """A child process running PEER; `expect` waits for its next matching JSON line."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[dict[str, Any]] = []
        self.eof = False
        self._cond = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._cond:
                self.lines.append(json.loads(raw))
                self._cond.notify_all()
        async with self._cond:
            self.eof = True
            self._cond.notify_all()

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, op: str, **fields: Any) -> dict[str, Any]:
        """Consume and return the first line with this `op` (and these field values)."""

        def find() -> dict[str, Any] | None:
            for i, line in enumerate(self.lines):
                if line["op"] == op and all(line.get(k) == v for k, v in fields.items()):
                    return self.lines.pop(i)
            if self.eof:
                raise AssertionError(f"peer exited: {self.stderr.read_text()[-2000:]}")
            return None

        async with self._cond:
            found = await asyncio.wait_for(self._cond.wait_for(find), TIMEOUT)
        assert found is not None
        return found

    async def ask(self, command: str, op: str) -> dict[str, Any]:
        await self.send(command)
        return await self.expect(op)


@pytest.fixture
async def peer(redis_url: str, namespace: str, tmp_path: Path) -> AsyncIterator[Peer]:
    stderr = tmp_path / "peer.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PEER, redis_url, namespace,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=REPO,
        )  # fmt: skip
    peer = Peer(proc, stderr)
    try:
        await peer.expect("ready")
        yield peer
        await peer.send("quit")
        await peer.expect("bye")
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await peer._reader


def reset_waiter(cache: MultiLevelCache, reason: str) -> asyncio.Event:
    """An Event set when the cache flushes its whole L1 for a reason containing `reason`."""
    flushed = asyncio.Event()

    def listen(event: CacheEvent) -> None:
        if event.kind == EVICT and event.key == "*" and reason in event.detail:
            flushed.set()

    cache.events.subscribe(listen)
    return flushed


async def _op(cache: MultiLevelCache, op: str, key: str, i: int) -> None:
    if op == "set":
        await cache.set(key, f"new-{i}")
    elif op == "invalidate":
        await cache.invalidate(key)
    elif op == "pattern":
        await cache.invalidate_pattern(f"policy:{i}:*")
    else:
        assert await cache.invalidate_tag(f"t{i}") == [key]


async def test_every_op_evicts_the_l1_of_another_process(
    redis: aioredis.Redis, namespace: str, peer: Peer
) -> None:
    """Process B holds a key in L1; process A (this one) changes it; B never serves the old value.

    Also times publish -> evict across the two processes from the time.time() stamps each side
    takes (A before its call, B when its L1 evicts); printed with `pytest -s`, never asserted.
    """
    ops = ("set", "invalidate", "pattern", "tag")
    repeats = 15 * len(ops)
    delays: dict[str, list[float]] = {op: [] for op in ops}
    async with MultiLevelCache(redis, namespace=namespace) as a:
        published = 0
        for i in range(repeats):
            op, key, old = ops[i % len(ops)], f"policy:{i}:v", f"old-{i}"
            await a.set(key, old, tags=[f"t{i}"])
            published += 1
            await peer.ask(f"wait {published}", "waited")  # B has applied everything so far
            assert (await peer.ask(f"get {key}", "get"))["level"] == "l2"
            assert await peer.ask(f"get {key}", "get") == {
                "op": "get", "key": key, "value": old, "level": "l1"
            }  # fmt: skip
            sent = time.time()
            await _op(a, op, key, i)
            published += 1
            evicted = await peer.expect("evict", key=key)  # events name the cache key
            delays[op].append((evicted["t"] - sent) * 1000)
            await peer.ask(f"wait {published}", "waited")
            after = await peer.ask(f"get {key}", "get")
            assert after["value"] != old
            if op == "set":
                assert (after["value"], after["level"]) == (f"new-{i}", "l2")
            else:
                assert after["level"] == "source" and after["value"].startswith("loaded-by-peer")
        stats = await peer.ask("stats", "stats")
        assert (stats["received"], stats["resets"]) == (published, 0)
        assert a.backplane is not None and a.backplane.received == 0  # B never published
    every = sorted(d for ds in delays.values() for d in ds)
    print(
        f"\nbackplane publish->evict across processes over {len(every)} repeats: "
        f"median {statistics.median(every):.3f} ms, p99 {every[int(0.99 * (len(every) - 1))]:.3f}"
        f" ms, max {every[-1]:.3f} ms; median by op "
        + ", ".join(f"{op} {statistics.median(ds):.3f} ms" for op, ds in delays.items())
    )


async def test_propagation_delay_between_processes(
    redis: aioredis.Redis, namespace: str, peer: Peer
) -> None:
    """100 timed invalidations, A -> B (report numbers; the assertion is only on what B serves)."""
    repeats = 100
    delays = []
    async with MultiLevelCache(redis, namespace=namespace) as a:
        await a.set("policy:12345", "v0")
        await peer.ask("wait 1", "waited")
        for i in range(1, repeats + 1):
            assert (await peer.ask("get policy:12345", "get"))["value"] == f"v{i - 1}"
            sent = time.time()
            await a.set("policy:12345", f"v{i}")
            evicted = await peer.expect("evict", key="policy:12345")
            delays.append((evicted["t"] - sent) * 1000)
            await peer.ask(f"wait {i + 1}", "waited")
        assert (await peer.ask("get policy:12345", "get"))["value"] == f"v{repeats}"
    delays.sort()
    print(
        f"\nbackplane set->evict, {repeats} repeats: median {statistics.median(delays):.3f} ms, "
        f"p99 {delays[int(0.99 * (repeats - 1))]:.3f} ms, max {delays[-1]:.3f} ms"
    )


async def test_instances_in_one_process_and_other_namespaces(
    redis: aioredis.Redis, namespace: str
) -> None:
    other_ns = namespace.rstrip(":") + "-other:"
    async with (
        MultiLevelCache(redis, namespace=namespace) as a,
        MultiLevelCache(redis, namespace=namespace) as b,
        MultiLevelCache(redis, namespace=other_ns) as stranger,
    ):
        assert a.backplane and b.backplane and stranger.backplane
        for cache in (b, stranger):
            for key in ("policy:1", "policy:2", "customer:1"):
                await cache.get(key, Loader("v"))
        await a.invalidate("policy:1")
        await a.invalidate_pattern("customer:*")
        await b.backplane.wait_received(2)
        assert sorted(b.l1.keys()) == [b.key("policy:2")]
        assert len(stranger.l1) == 3 and stranger.backplane.received == 0
        assert b.stats.l1_evictions == 2 and b.backplane.resets == 0


async def test_an_instance_ignores_its_own_messages(redis: aioredis.Redis, namespace: str) -> None:
    async with MultiLevelCache(redis, namespace=namespace) as a:
        assert a.backplane is not None
        await a.set("policy:1", "mine")
        # Pub/sub keeps order on one connection: once this later message is applied, A has
        # already seen (and skipped) its own.
        sentinel = {"src": "someone-else", "seq": 1, "op": "keys", "arg": [a.key("other")]}
        await redis.publish(a.backplane.channel, json.dumps(sentinel))
        await a.backplane.wait_received(1)
        assert a.backplane.received == 1
        assert a.l1[a.key("policy:1")][0] == "mine"
        assert a.stats.l1_evictions == 0 and a.backplane.resets == 0


async def test_a_gap_in_sequence_numbers_flushes_l1(redis: aioredis.Redis, namespace: str) -> None:
    async with MultiLevelCache(redis, namespace=namespace) as cache:
        assert cache.backplane is not None
        channel = cache.backplane.channel
        flushed = reset_waiter(cache, "gap")
        for key in ("a", "b", "c"):
            await cache.get(key, Loader(key))

        async def forge(seq: int, keys: list[str]) -> None:
            message = {"src": "forger", "seq": seq, "op": "keys", "arg": keys}
            await redis.publish(channel, json.dumps(message))

        await forge(7, [cache.key("a")])  # a sender's first message: any number is fine
        await redis.publish(channel, b"{not json")  # malformed: logged and ignored
        await forge(8, [])
        await cache.backplane.wait_received(2)
        assert sorted(cache.l1.keys()) == [cache.key("b"), cache.key("c")]
        assert cache.backplane.resets == 0 and not flushed.is_set()
        await forge(10, [])  # 9 was lost
        await asyncio.wait_for(flushed.wait(), TIMEOUT)
        assert len(cache.l1) == 0 and cache.backplane.resets == 1
        await cache.get("b", Loader("b"))
        await forge(11, [cache.key("b")])  # back in step: targeted evictions again
        await cache.backplane.wait_received(4)
        assert len(cache.l1) == 0 and cache.backplane.resets == 1


async def _two_caches(
    url: str, namespace: str
) -> tuple[aioredis.Redis, MultiLevelCache, MultiLevelCache]:
    client = aioredis.from_url(url)
    a = await MultiLevelCache(client, namespace=namespace).start()
    b = await MultiLevelCache(client, namespace=namespace).start()
    return client, a, b


async def test_a_killed_subscription_clears_l1_and_recovers(
    fresh_server: RedisServer, namespace: str
) -> None:
    client, a, b = await _two_caches(fresh_server.url, namespace)
    try:
        assert b.backplane is not None
        reconnected = reset_waiter(b, "reconnected")
        for key in ("policy:1", "policy:2"):
            await b.get(key, Loader("v1"))
        assert await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 2
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        assert len(b.l1) == 0 and b.backplane.resets >= 1
        # The new subscription works: a later invalidation still reaches B.
        await b.get("policy:1", Loader("v1"))
        received = b.backplane.received
        await a.invalidate("policy:1")
        await b.backplane.wait_received(received + 1)
        assert b.key("policy:1") not in b.l1
    finally:
        await a.close()
        await b.close()
        await client.aclose()


async def test_l1_filled_while_disconnected_is_dropped_on_resubscribe(
    fresh_server: RedisServer, namespace: str
) -> None:
    """What B put in L1 while it could not hear invalidations must go once it hears again."""
    client, a, b = await _two_caches(fresh_server.url, namespace)
    try:
        lost, reconnected = reset_waiter(b, "lost"), reset_waiter(b, "reconnected")
        fresh_server.kill()
        await asyncio.wait_for(lost.wait(), TIMEOUT)
        assert await b.get("policy:1", Loader("loaded during the outage")) is not None
        assert b.key("policy:1") in b.l1  # fallback: served and kept briefly in L1
        await asyncio.to_thread(fresh_server.start)
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        assert b.key("policy:1") not in b.l1
    finally:
        await a.close()
        await b.close()
        await client.aclose()


async def test_close_stops_the_listener(redis: aioredis.Redis, namespace: str) -> None:
    cache = await MultiLevelCache(redis, namespace=namespace).start()
    assert cache.backplane is not None and cache.backplane.running
    await cache.close()
    assert not cache.backplane.running
    await cache.close()  # idempotent
    off = MultiLevelCache(redis, namespace=namespace, backplane=False)
    await off.start()
    assert off.backplane is None
