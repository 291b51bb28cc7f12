"""labcache on a real Redis Cluster (3 primaries + 3 replicas, started once for this module).

Every pattern of Parts 2-4 runs on the cluster, with keys spread over all three primaries;
the failover test kills a primary mid-workload and checks that callers never see an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from labcache.aside import CacheAside, unlink_matching
from labcache.cluster import (
    ClusterBackplane,
    ClusterUnsupported,
    group_by_slot,
    key_slot,
    scan_pages,
    split_cluster_url,
)
from labcache.connection import RedisUnavailable, connect
from labcache.embedded import RedisBinaryNotFound, find_redis_server, server_version
from labcache.generations import Generation
from labcache.invalidation import Invalidator
from labcache.lab.local_cluster import LocalCluster, failover_drill
from labcache.lab.rules import LAB_RULES, POLICY_UPDATED
from labcache.multilevel import MultiLevelCache, Stampede
from labcache.stampede import DistributedLock
from labcache.warming import CacheWarmer
from tests.helpers import Loader

try:
    BINARY = find_redis_server()
except RedisBinaryNotFound as exc:
    pytest.skip(
        f"no redis-server binary to build a local cluster from ({exc})", allow_module_level=True
    )
SHARDED = server_version(BINARY) >= (7, 0)  # SPUBLISH/SSUBSCRIBE came with Redis 7


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(primaries=3, replicas=1) as c:
        yield c


@pytest.fixture
async def rc(cluster: LocalCluster, namespace: str) -> AsyncIterator[RedisCluster]:
    client = await cluster.client().initialize()
    yield client
    await unlink_matching(client, namespace + "*")  # type: ignore[arg-type]
    await client.aclose()


def owners(cluster: LocalCluster, keys: list[str]) -> Counter[int]:
    """How many of `keys` each primary holds (by the slot map, not by asking)."""
    ranges = {n.port: n.slots for n in cluster.nodes() if n.role == "primary" and n.alive}
    return Counter(
        port
        for key in keys
        for port, slots in ranges.items()
        if any(a <= key_slot(key) <= b for a, b in slots)
    )


# -- the local cluster and connecting to it --------------------------------------------------


def test_local_cluster_has_three_primaries_each_with_an_in_sync_replica(
    cluster: LocalCluster,
) -> None:
    nodes = cluster.nodes()
    primaries = [n for n in nodes if n.role == "primary"]
    replicas = [n for n in nodes if n.role == "replica"]
    assert (len(primaries), len(replicas)) == (3, 3)
    assert sum(b - a + 1 for n in primaries for a, b in n.slots) == 16384
    assert sorted(r.primary_of for r in replicas) == sorted(p.node_id for p in primaries)
    cluster.wait_healthy(timeout=0)  # healthy now, or TimeoutError naming what is wrong


def test_cluster_urls_are_recognised() -> None:
    assert split_cluster_url("redis+cluster://h:7000") == ("redis://h:7000", True)
    assert split_cluster_url("rediss+cluster://u:p@h:7000/0") == ("rediss://u:p@h:7000/0", True)
    assert split_cluster_url("redis://h:7000/0?cluster=true&x=1") == ("redis://h:7000/0?x=1", True)
    assert split_cluster_url("redis://h:7000?cluster=no") == ("redis://h:7000", False)
    assert split_cluster_url("redis://h:7000", {"LABCACHE_CLUSTER": "1"}) == (
        "redis://h:7000",
        True,
    )
    assert split_cluster_url("unix:///tmp/r.sock?db=0") == ("unix:///tmp/r.sock?db=0", False)


async def test_connect_returns_a_cluster_client_for_each_way_of_asking(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = cluster.url.replace("redis+cluster", "redis")
    first = await connect(cluster.url, announce=False)
    second = await connect(plain + "/0?cluster=true", announce=False)
    monkeypatch.setenv("LABCACHE_CLUSTER", "1")
    third = await connect(plain, announce=False)
    for client in (first, second, third):
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
        await client.aclose()
    monkeypatch.setenv("REDIS_URL", "")  # empty, not unset: a developer's .env cannot fill it
    monkeypatch.setenv("REDIS_HOST", "")
    with pytest.raises(RedisUnavailable, match="LABCACHE_CLUSTER=1 needs REDIS_URL"):
        await connect(announce=False)


async def test_connect_to_a_plain_server_as_a_cluster_says_so(redis_url: str) -> None:
    with pytest.raises(RedisUnavailable, match="Cluster mode is not enabled"):
        await connect(redis_url.split("/0")[0] + "?cluster=true", announce=False)


# -- cache-aside ----------------------------------------------------------------------------


async def test_cache_aside_works_unchanged_with_keys_on_every_primary(
    cluster: LocalCluster, rc: RedisCluster, namespace: str
) -> None:
    cache = CacheAside(rc, namespace=namespace)  # type: ignore[arg-type]
    keys = [f"policy:{i}" for i in range(60)]
    loader = Loader({"premium": 0})  # a falsy-looking value is still a hit
    for key in keys:
        assert await cache.get(key, loader) == {"premium": 0}
    for key in keys:
        assert await cache.get(key, loader) == {"premium": 0}
    assert loader.calls == 60
    assert (cache.stats.hits, cache.stats.misses) == (60, 60)
    spread = owners(cluster, [cache.key(k) for k in keys])
    assert len(spread) == 3 and min(spread.values()) >= 10
    await cache.set("policy:0", {"premium": 5})
    assert await cache.get("policy:0", loader) == {"premium": 5}
    assert await cache.invalidate("policy:0", "policy:1", "policy:2") == 3  # three slots
    assert await cache.get("policy:1", loader) == {"premium": 0}
    assert loader.calls == 61


async def test_pattern_invalidation_walks_every_primary(
    cluster: LocalCluster, rc: RedisCluster, namespace: str
) -> None:
    cache = CacheAside(rc, namespace=namespace)  # type: ignore[arg-type]
    for i in range(90):
        await cache.set(f"policy:{i}", i)
        await cache.set(f"customer:{i}", i)
    await cache.set("xpolicy:19", 19)
    policy_keys = [cache.key(f"policy:{i}") for i in range(90)]
    assert len(owners(cluster, policy_keys)) == 3
    # redis-py's own scan_iter also visits every primary (verified here, redis-py 8).
    found = {k.decode() async for k in rc.scan_iter(match=namespace + "policy:*", count=50)}
    assert found == set(policy_keys)
    pages = [page async for page in scan_pages(rc, namespace + "policy:*", count=50)]
    assert sum(len(p) for p in pages) == 90
    assert await cache.invalidate_pattern("policy:*", count=50) == 90
    assert await rc.exists(*policy_keys) == 0
    assert await rc.exists(*(cache.key(f"customer:{i}") for i in range(90))) == 90
    assert await rc.get(cache.key("xpolicy:19")) == b"19"


async def test_a_multi_key_command_across_slots_is_refused_and_split_per_slot_works(
    rc: RedisCluster, namespace: str
) -> None:
    a, b = namespace + "policy:1", namespace + "policy:2"
    assert key_slot(a) != key_slot(b)
    await rc.set(a, 1)
    await rc.set(b, 2)
    node = rc.get_node_from_key(a)
    with pytest.raises(ClusterCrossSlotError, match="same slot"):  # the server's CROSSSLOT
        await rc.execute_command("MGET", a, b, target_nodes=node)
    with pytest.raises(RedisClusterException, match="same key slot"):  # redis-py's, for scripts
        await rc.register_script("return 1")(keys=[a, b])
    assert await rc.mget_nonatomic([a, b]) == [b"1", b"2"]
    assert len(group_by_slot([a, b, namespace + "{policy:1}:x"])) == 3
    assert key_slot("{policy:1}:quote") == key_slot("policy:1")  # a hash tag shares a slot
    assert await rc.unlink(a, b) == 2  # redis-py sends one UNLINK per slot


# -- multi-level caching, backplane, tags ----------------------------------------------------


@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
async def test_backplane_between_two_instances_on_the_cluster(
    cluster: LocalCluster, rc: RedisCluster, namespace: str, sharded: bool
) -> None:
    if sharded and not SHARDED:
        pytest.skip(f"sharded pub/sub needs Redis 7; {BINARY} is {server_version(BINARY)}")
    other = cluster.client()
    a = MultiLevelCache(rc, namespace=namespace)  # type: ignore[arg-type]
    b = MultiLevelCache(other, namespace=namespace)  # type: ignore[arg-type]
    assert isinstance(a.backplane, ClusterBackplane) and isinstance(b.backplane, ClusterBackplane)
    a.backplane.sharded = b.backplane.sharded = sharded
    async with a, b:
        loader = Loader("v1")
        for key in ("policy:1", "policy:2", "customer:9"):
            await a.get(key, loader)
            assert await b.get(key, Loader("unused")) == "v1"
        assert len(b.l1) == 3
        await a.set("policy:1", "v2")
        await b.backplane.wait_received(1)
        assert await b.get("policy:1", Loader("unused")) == "v2"  # from Redis, not a stale L1
        await a.invalidate("policy:2")
        await b.backplane.wait_received(2)
        await a.invalidate_pattern("customer:*")
        await b.backplane.wait_received(3)
        assert b.l1.get(b.key("policy:2")) is None and b.l1.get(b.key("customer:9")) is None
        assert b.backplane.resets == 0
    await other.aclose()


async def test_sharded_pubsub_is_chosen_where_the_server_has_it(
    rc: RedisCluster, namespace: str
) -> None:
    node = rc.get_primaries()[0]
    version = (await rc.info("server", target_nodes=node))["redis_version"]
    async with MultiLevelCache(rc, namespace=namespace) as cache:  # type: ignore[arg-type]
        assert isinstance(cache.backplane, ClusterBackplane)
        assert cache.backplane.sharded is (int(version.split(".")[0]) >= 7)


async def test_tags_invalidate_members_that_live_in_other_slots(
    cluster: LocalCluster, rc: RedisCluster, namespace: str
) -> None:
    other = cluster.client()
    a = MultiLevelCache(rc, namespace=namespace)  # type: ignore[arg-type]
    b = MultiLevelCache(other, namespace=namespace)  # type: ignore[arg-type]
    async with a, b:
        members = [f"quote:{i}" for i in range(30)]
        for i, key in enumerate(members):
            await a.get(key, Loader(i), tags=["customer:7"], ttl=100 + i)
        await a.get("quote:other", Loader("x"), tags=["customer:8"])
        tag_key = a.tag_key("customer:7")
        fulls = [a.key(k) for k in members]
        assert len(owners(cluster, [tag_key, *fulls])) == 3
        assert len({key_slot(k) for k in fulls} - {key_slot(tag_key)}) >= 29
        assert await rc.scard(tag_key) == 30
        assert 100_000 < await rc.pttl(tag_key) <= 129_000  # as long as its longest member
        for key in members[:3]:
            await b.get(key, Loader("unused"))  # b holds copies in L1
        dropped = await a.invalidate_tag("customer:7")
        assert sorted(dropped) == sorted(members)
        assert await rc.exists(*fulls) == 0 and await rc.exists(tag_key) == 0
        assert await rc.exists(a.key("quote:other"), a.tag_key("customer:8")) == 2
        await b.backplane.wait_received(1)
        assert not any(b.l1.get(k) for k in fulls)
        assert await a.invalidate_tag("customer:7") == []
    await other.aclose()


async def test_tracking_is_refused_on_a_cluster_with_the_reason(
    rc: RedisCluster, namespace: str
) -> None:
    with pytest.raises(ClusterUnsupported, match="tracking is not supported on a cluster yet"):
        MultiLevelCache(rc, namespace=namespace, tracking=True)  # type: ignore[arg-type]


async def test_warming_pipelines_route_each_key_to_its_primary(
    cluster: LocalCluster, rc: RedisCluster, namespace: str
) -> None:
    async with MultiLevelCache(rc, namespace=namespace) as cache:  # type: ignore[arg-type]
        warmer = CacheWarmer(cache, batch_size=100, progress=False)
        keys = [f"policy:{i}" for i in range(150)]

        async def load(key: str) -> dict[str, str]:
            return {"id": key}

        result = await warmer.warm(keys, load)
        assert (result.warmed, result.skipped, result.failed) == (150, 0, {})
        fulls = [cache.key(k) for k in keys]
        assert await rc.exists(*fulls) == 150
        assert len(owners(cluster, fulls)) == 3
        again = await warmer.warm(keys, load)
        assert (again.warmed, again.skipped) == (0, 150)
        assert await cache.get("policy:7", Loader("unused"), skip_memory=True) == {"id": "policy:7"}


async def test_invalidation_rules_and_generations_on_the_cluster(
    rc: RedisCluster, namespace: str
) -> None:
    async with MultiLevelCache(rc, namespace=namespace) as cache:  # type: ignore[arg-type]
        await cache.set("policy:7", "p", tags=["policy:7"])
        await cache.set("quote:1", "q", tags=["policy:7", "customer:3"])
        await cache.set("customer:3:policies", "list")
        await cache.set("policy:8", "other", tags=["policy:8"])
        report = await Invalidator(cache, rules=LAB_RULES).emit(
            POLICY_UPDATED, policy_id=7, customer_id=3
        )
        assert report.ok, report.failures
        assert sorted(report.tag_members["policy:7"]) == ["policy:7", "quote:1"]
        assert report.counts == {"keys": 1, "tags": 2, "patterns": 0}
        assert await rc.exists(cache.key("policy:8")) == 1
        gen = Generation(cache, "policy", check_every=0.001)
        await gen.set("1", "g0")
        assert await gen.get("1", Loader("unused")) == "g0"
        assert await gen.bump() == 1
        assert await gen.get("1", Loader("g1")) == "g1"


async def test_distributed_lock_on_one_key_works_and_release_wakes_a_waiter(
    rc: RedisCluster, namespace: str
) -> None:
    lock = DistributedLock(rc, namespace, poll_interval=60)  # type: ignore[arg-type]
    token = await lock.acquire("policy:1")
    assert token is not None and await lock.acquire("policy:1") is None
    waiter = asyncio.create_task(lock.acquire_or_wait("policy:1", timeout=60))
    await lock.listener.wait_ready()  # the waiter listens for the release
    assert lock.stats.waits == 1
    assert await lock.release("policy:1", token) is True  # PUBLISH from Lua reaches the waiter
    outcome = await waiter
    assert (outcome.token, outcome.waited, lock.stats.notified) == (None, True, 1)
    await lock.close()

    caches = [
        MultiLevelCache(
            rc,
            namespace=namespace,
            backplane=False,
            stampede=Stampede(lock=DistributedLock(rc, namespace)),
        )  # type: ignore[arg-type]
        for _ in range(4)
    ]
    loader = Loader("once")
    values = await asyncio.gather(*(c.get("policy:2", loader) for c in caches))
    assert values == ["once"] * 4 and loader.calls == 1
    for cache in caches:
        await cache.close()


# -- failover --------------------------------------------------------------------------------


async def test_a_primary_dies_mid_workload_and_callers_see_no_error(
    cluster: LocalCluster, namespace: str
) -> None:
    client = await connect(cluster.url, announce=False)
    other = await connect(cluster.url, announce=False)
    idle = await connect(cluster.url, announce=False)  # its slot map will predate the failover
    await idle.ping()
    cache = await MultiLevelCache(client, namespace=namespace).start()
    peer = await MultiLevelCache(other, namespace=namespace).start()
    assert isinstance(cache.backplane, ClusterBackplane)
    assert cache.backplane.sharded is SHARDED
    # Start with a key on the primary that also carries the backplane's channel, so that the
    # drill kills the shard the two instances' invalidations travel through.
    primary = {n.port: n.slots for n in cluster.nodes() if n.role == "primary"}
    channel_port = next(
        p
        for p, s in primary.items()
        if any(a <= key_slot(cache.backplane.channel) <= b for a, b in s)
    )
    keys = [f"policy:{i}" for i in range(120)]
    keys.sort(
        key=lambda k: not any(a <= key_slot(cache.key(k)) <= b for a, b in primary[channel_port])
    )

    def value_for(key: str) -> dict[str, str]:
        return {"id": key}

    for key in keys:
        await cache.set(key, value_for(key))
    assert len(owners(cluster, [cache.key(k) for k in keys])) == 3
    report = await failover_drill(cluster, cache, keys, value_for, after=len(keys))
    try:
        print(report)
        assert report.killed_port == channel_port
        assert report.errors == 0 and report.wrong_values == 0
        assert report.fallbacks >= 1  # the dead primary's keys were served by the loader
        assert report.recovery_seconds is not None
        tail = report.timeline[-len(keys) :]
        assert all(outcome == "hit:l2" for _, outcome, _ in tail)  # every shard serves again
        assert cluster.primary_for(cache.key(keys[0])) != report.killed_port
        # The backplane follows its channel to the new primary: an invalidation reaches the peer.
        await peer.get(keys[1], Loader("unused"))
        assert peer.l1.get(peer.key(keys[1])) is not None
        for _ in range(100):  # published while the peer re-subscribes, a message is lost: resend
            await cache.invalidate(keys[1])
            with contextlib.suppress(asyncio.TimeoutError):
                await peer.backplane.wait_received(peer.backplane.received + 1, timeout=0.2)
                break
        assert peer.l1.get(peer.key(keys[1])) is None
        assert peer.backplane.resets >= 1  # it flushed L1 when its subscription broke
        # A client that slept through the failover still walks every live primary: its first
        # SCAN goes to the dead one, so the walk reloads the slot map and starts again.
        walked = {key async for page in scan_pages(idle, namespace + "*") for key in page}
        assert walked >= {cache.key(k).encode() for k in keys if k != keys[1]}
    finally:
        await idle.aclose()
        await cache.close()
        await peer.close()
        await client.aclose()
        await other.aclose()
        cluster.restart(report.killed_port)  # it rejoins as a replica; later tests get 3+3
    assert len([n for n in cluster.nodes() if n.role == "replica" and n.alive]) == 3
