"""Cache-aside semantics (Part 2), each against the real redis-server the suite started."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from labcache.aside import CacheAside
from labcache.serializers import SerializationError
from tests.helpers import Loader, command_counts, commands_sent


@pytest.fixture
def cache(redis: aioredis.Redis, namespace: str) -> CacheAside:
    return CacheAside(redis, namespace=namespace)


async def test_miss_then_hit_calls_loader_once(cache: CacheAside) -> None:
    loader = Loader({"id": "12345"})
    assert await cache.get("policy:12345", loader, ttl=60) == {"id": "12345"}
    assert await cache.get("policy:12345", loader, ttl=60) == {"id": "12345"}
    assert loader.calls == 1
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


@pytest.mark.parametrize("falsy", [0, "", [], {}, False, 0.0])
async def test_cached_falsy_value_is_a_hit(cache: CacheAside, falsy: object) -> None:
    loader = Loader(falsy)
    await cache.get("k", loader)
    assert await cache.get("k", loader) == falsy
    assert loader.calls == 1


async def test_none_is_not_cached_by_default(cache: CacheAside) -> None:
    loader = Loader(None)
    assert await cache.get("missing", loader) is None
    assert await cache.get("missing", loader) is None
    assert loader.calls == 2
    assert await cache.redis.exists(cache.key("missing")) == 0


async def test_negative_caching_stores_none_with_its_own_ttl(
    redis: aioredis.Redis, namespace: str
) -> None:
    cache = CacheAside(redis, namespace=namespace, negative_ttl=5)
    loader = Loader(None)
    await cache.get("missing", loader, ttl=600)
    assert await cache.get("missing", loader) is None
    assert loader.calls == 1
    assert 0 < await redis.pttl(cache.key("missing")) <= 5000


async def test_ttl_is_set_on_the_redis_key(cache: CacheAside) -> None:
    await cache.get("k", Loader(1), ttl=30)
    assert 29_000 < await cache.redis.pttl(cache.key("k")) <= 30_000


async def test_loader_error_propagates_and_nothing_is_cached(cache: CacheAside) -> None:
    loader = Loader(error=RuntimeError("db down"))
    with pytest.raises(RuntimeError, match="db down"):
        await cache.get("k", loader)
    assert await cache.redis.exists(cache.key("k")) == 0


async def test_redis_failure_during_get_calls_loader_once(namespace: str) -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cache = CacheAside(dead, namespace=namespace)
    loader = Loader({"premium": 1200})
    assert await cache.get("policy:1", loader) == {"premium": 1200}
    assert loader.calls == 1
    assert cache.stats.errors == 1
    await dead.aclose()


async def test_failed_cache_write_does_not_reload(cache: CacheAside, redis_url: str) -> None:
    """Mistake 7: when only the write fails, the loader must not be called a second time."""
    user = f"ro-{cache.namespace.rstrip(':')}"
    await cache.redis.acl_setuser(
        user, enabled=True, nopass=True, keys=["*"], commands=["+@read", "+@connection"], reset=True
    )
    readonly = aioredis.from_url(redis_url, username=user, password="x")
    try:
        cache2 = CacheAside(readonly, namespace=cache.namespace)
        loader = Loader("v")
        assert await cache2.get("k", loader) == "v"  # GET works, SET is refused by the ACL
        assert loader.calls == 1
        assert cache2.stats.errors == 1
    finally:
        await readonly.aclose()
        await cache.redis.acl_deluser(user)


async def test_corrupt_entry_is_a_miss_and_is_deleted(cache: CacheAside) -> None:
    await cache.redis.set(cache.key("k"), b"\xff{not json")
    loader = Loader({"ok": True})
    assert await cache.get("k", loader) == {"ok": True}
    assert loader.calls == 1
    assert cache.stats.errors == 1
    assert await cache.get("k", loader) == {"ok": True}
    assert loader.calls == 1


async def test_unserialisable_value_names_the_key(cache: CacheAside) -> None:
    with pytest.raises(TypeError, match="policy:9"):
        await cache.set("policy:9", {"when": object()})
    with pytest.raises(SerializationError, match="policy:9"):
        await cache.set("policy:9", float("nan"))


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "60", None])
async def test_invalid_ttl_is_a_value_error(cache: CacheAside, ttl: object) -> None:
    if ttl is None:
        await cache.set("k", 1, ttl=None)  # None means the default TTL
        return
    with pytest.raises(ValueError, match="positive number"):
        await cache.set("k", 1, ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive number"):
        await cache.get("k", Loader(1), ttl=ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", 12, None, b"bytes"])
async def test_bad_keys_are_refused(cache: CacheAside, key: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await cache.get(key, Loader(1))  # type: ignore[arg-type]


async def test_invalidate_and_pattern_use_scan_not_keys(cache: CacheAside) -> None:
    for i in range(30):
        await cache.set(f"policy:{i}", i)
    await cache.set("xpolicy:19", "other")
    assert await cache.invalidate("policy:0", "policy:absent") == 1
    before = await command_counts(cache.redis)
    assert await cache.invalidate_pattern("policy:1*", count=5) == 11  # 1 and 10..19
    sent = await commands_sent(cache.redis, before)
    assert "keys" not in sent and sent["scan"] >= 2
    assert await cache.redis.exists(cache.key("xpolicy:19")) == 1
    assert await cache.redis.exists(cache.key("policy:2")) == 1
