"""TTL strategies: per-type TTLs, jitter, sliding expiration, and L1 never outliving L2."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from labcache import entry
from labcache.connection import Settings
from labcache.multilevel import Memory, MultiLevelCache, Staleness, Stampede
from labcache.ttl import Jitter, TypeTTL, kind_of, l1_ttl
from tests.helpers import Loader, command_counts, commands_sent


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cache_for(redis: aioredis.Redis, namespace: str, **options: object) -> MultiLevelCache:
    return MultiLevelCache(redis, namespace=namespace, backplane=False, **options)  # type: ignore[arg-type]


async def record_of(cache: MultiLevelCache, key: str) -> entry.Entry:
    data = await cache.redis.get(cache.key(key))
    assert data is not None, f"{key} is not in Redis"
    return entry.decode(data)


def l1_expiry(cache: MultiLevelCache, key: str) -> float:
    return cache.l1[cache.key(key)][1]


# -- per-type TTLs ---------------------------------------------------------------------------


def test_type_ttls_come_from_the_settings() -> None:
    ttls = TypeTTL(Settings(policy_ttl=1800, quote_ttl=600, agent_ttl=3600, default_ttl=300))
    assert ttls.for_key("policy:12345") == 1800
    assert ttls("quote:9f2c") == 600
    assert ttls.for_key("agent:stats:A001") == 3600
    assert ttls.for_key("weather:today") == 300  # unknown type: DEFAULT_TTL
    assert kind_of("customer:60001") == "customer"


def test_type_ttls_can_be_jittered() -> None:
    ttls = TypeTTL(Settings(policy_ttl=1000), jitter=Jitter(0.1, random.Random(1)))
    values = [ttls.for_key("policy:1") for _ in range(200)]
    assert all(900 <= v <= 1100 for v in values)
    assert len(set(values)) == 200


# -- jitter ----------------------------------------------------------------------------------


def test_jitter_is_seeded_bounded_and_spread() -> None:
    jitter = Jitter(fraction=0.1, rng=random.Random(1))
    values = [jitter(60) for _ in range(1000)]
    twin = Jitter(fraction=0.1, rng=random.Random(1))
    assert values == [twin(60) for _ in range(1000)]  # the same seed, the same spread
    assert all(54 <= v <= 66 for v in values)
    per_second = Counter(int(v) for v in values)
    assert len(per_second) == 12  # 54..65: every second of the window gets some
    assert max(per_second.values()) < 120  # ~1000/12 each, none holding the crowd
    assert jitter.bounds(60) == pytest.approx((54, 66))
    assert Jitter(0.0)(60) == 60


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.1", True])
def test_jitter_refuses_a_bad_fraction(fraction: object) -> None:
    with pytest.raises(ValueError, match="fraction"):
        Jitter(fraction)  # type: ignore[arg-type]


async def test_jitter_spreads_a_mass_expiry_and_l1_never_outlives_redis(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    plain = cache_for(redis, namespace + "plain:", l1=Memory(ttl=60, clock=clock), clock=clock)
    jittered = cache_for(
        redis,
        namespace,
        l1=Memory(ttl=60, clock=clock),
        stampede=Stampede(jitter=Jitter(0.1, random.Random(6))),
        clock=clock,
    )
    for i in range(200):  # a warm-up: everything written at the same instant
        await plain.get(f"policy:{i}", Loader(i), ttl=60)
        await jittered.get(f"policy:{i}", Loader(i), ttl=60)
    plain_expiries = {(await record_of(plain, f"policy:{i}")).expires_at for i in range(200)}
    expiries = [(await record_of(jittered, f"policy:{i}")).expires_at for i in range(200)]
    assert len(plain_expiries) == 1  # all 200 would reload in the same instant
    assert len(set(expiries)) > 190  # (ms resolution: a few share a millisecond)
    assert min(expiries) - clock.now < 55 and max(expiries) - clock.now > 65
    for i, expires_at in enumerate(expiries):  # jitter shortened some below memory_ttl
        assert l1_expiry(jittered, f"policy:{i}") <= expires_at
    await jittered.set("policy:x", 1, ttl=60)
    assert l1_expiry(jittered, "policy:x") <= (await record_of(jittered, "policy:x")).expires_at


# -- sliding expiration ----------------------------------------------------------------------


async def test_sliding_renews_the_entry_on_every_read_that_reaches_redis(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(redis, namespace, staleness=Staleness(sliding=True), clock=clock)
    loader = Loader("v")
    await cache.get("k", loader, ttl=10, skip_memory=True)
    for _ in range(10):  # 80 s of reads, 8 s apart: each renews the 10 s TTL
        clock.now += 8
        assert await cache.get("k", loader, ttl=10, skip_memory=True) == "v"
        record = await record_of(cache, "k")
        assert record.expires_at == pytest.approx(clock.now + 10, abs=0.002)
        assert 9_000 < await redis.pttl(cache.key("k")) <= 10_000
    assert loader.calls == 1
    plain = cache_for(redis, namespace + "plain:", clock=clock)
    plain_loader = Loader("v")
    await plain.get("k", plain_loader, ttl=10, skip_memory=True)
    for _ in range(10):
        clock.now += 8
        await plain.get("k", plain_loader, ttl=10, skip_memory=True)
    assert plain_loader.calls == 6  # the same reads without sliding: a reload every 10 s


async def test_sliding_keeps_a_key_served_from_l1_alive(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Only reads that reach Redis slide; L1 copies of sliding entries last half the TTL."""
    clock = Clock()
    cache = cache_for(
        redis,
        namespace,
        l1=Memory(ttl=60, clock=clock),
        staleness=Staleness(sliding=True),
        clock=clock,
    )
    loader = Loader("v")
    await cache.get("k", loader, ttl=10)
    for _ in range(200):  # a read per second for 200 s
        clock.now += 1
        await cache.get("k", loader, ttl=10)
        assert l1_expiry(cache, "k") <= (await record_of(cache, "k")).expires_at
    assert loader.calls == 1
    assert cache.stats.l1_hits > cache.stats.l2_hits > 0


async def test_sliding_does_not_renew_an_expired_entry(
    redis: aioredis.Redis, namespace: str
) -> None:
    clock = Clock()
    cache = cache_for(redis, namespace, staleness=Staleness(grace=30, sliding=True), clock=clock)
    await cache.get("k", Loader("old"), ttl=10)
    clock.now += 11  # expired, within grace: served stale, not renewed by the read
    before = (await record_of(cache, "k")).expires_at
    patient = dataclasses.replace(cache.staleness, soft_timeout=1)
    await cache.get("k", Loader(error=RuntimeError("down")), ttl=10, staleness=patient)
    assert (await record_of(cache, "k")).expires_at == before
    assert cache.stampede_stats.stale_served == 1


async def test_sliding_costs_one_round_trip_and_refuses_tags(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = cache_for(redis, namespace, staleness=Staleness(sliding=True))
    await cache.get("k", Loader("v"), ttl=10, skip_memory=True)
    before = await command_counts(redis)
    await cache.get("k", Loader("v"), ttl=10, skip_memory=True)
    sent = await commands_sent(redis, before)
    assert sent == {"evalsha": 1, "get": 1, "set": 1}  # GET and SET inside one script call
    with pytest.raises(ValueError, match="tags"):
        await cache.get("t", Loader("v"), tags=["policy"])


# -- L1 never outlives L2 --------------------------------------------------------------------


def test_l1_ttl_is_bounded_by_every_rule() -> None:
    assert l1_ttl(60, 100, 130) == 30  # the Redis entry's expiry
    assert l1_ttl(60, 100, 1000) == 60  # memory_ttl
    assert l1_ttl(60, 100, 1000, sliding_ttl=10) == 5  # a Redis read every half TTL
    assert l1_ttl(60, 100, 90) < 0  # expired: no L1 copy at all


async def test_grace_never_extends_l1(redis: aioredis.Redis, namespace: str) -> None:
    clock = Clock()
    cache = cache_for(
        redis,
        namespace,
        l1=Memory(ttl=60, clock=clock),
        staleness=Staleness(grace=600),
        clock=clock,
    )
    await cache.get("k", Loader("v"), ttl=10)
    record = await record_of(cache, "k")
    assert l1_expiry(cache, "k") <= record.expires_at  # L1 stops at the logical expiry
    assert await redis.pttl(cache.key("k")) > 600_000  # Redis keeps it for the grace
    clock.now += 11
    with pytest.raises(KeyError):
        cache.l1[cache.key("k")]
