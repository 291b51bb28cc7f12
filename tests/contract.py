"""The cache-aside contract: one set of tests that every cache of this library must pass.

`CacheContract` is a mixin (as cachetools' tests reuse one mixin for every cache class); a
concrete test class in test_contract.py names the cache by giving a `make` fixture, a `Make`.
The tests use public API only: get, set, invalidate, invalidate_pattern, key, redis, events and
the stats both caches keep (misses, loads, errors, sets, invalidations, hit_rate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol

import pytest
import redis.asyncio as aioredis

from labcache.aside import CacheAside
from labcache.embedded import RedisServer
from labcache.events import ERROR, FALLBACK, HIT, L2, MISS, REJECTED, SOURCE, CacheEvent
from labcache.multilevel import MultiLevelCache
from tests.helpers import Loader, command_counts, commands_sent

Cache = CacheAside | MultiLevelCache
FALSY = [0, 0.0, "", [], {}, False]
BAD_KEYS = ["", 12, None, b"bytes"]
WAIT = 10.0  # seconds a test waits for something that should happen at once, before failing


class Make(Protocol):
    """Makes a cache on the test's namespace; everything it made is closed after the test.

    `url`: another Redis than the suite's (the factory owns that client and closes it);
    `username`/`password` for that client; `namespace`: another namespace than the test's.
    """

    async def __call__(
        self,
        url: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        namespace: str | None = None,
        negative_ttl: float | None = None,
        max_value_bytes: int | None = None,
    ) -> Cache: ...


def recorded(cache: Cache) -> list[CacheEvent]:
    """Every event the cache emits from now on."""
    events: list[CacheEvent] = []
    cache.events.subscribe(events.append)
    return events


def kinds(events: list[CacheEvent], kind: str) -> list[tuple[str, str]]:
    """(key, level) of each event of one kind."""
    return [(e.key, e.level) for e in events if e.kind == kind]


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Yield to the loop until `condition()` is true (fail after WAIT seconds; no time guessed)."""

    async def poll() -> None:
        while not await condition():  # noqa: ASYNC110 (a count the caches keep, not an event)
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(poll(), WAIT)
    except asyncio.TimeoutError:
        pytest.fail(f"not within {WAIT}s: {what}")


class CacheContract:
    """Cache-aside semantics every cache keeps; a subclass gives `make` and `coalesces`."""

    # Do N concurrent misses of one key share one load (single-flight)?
    coalesces: ClassVar[bool]

    async def waiting(self, cache: Cache, key: str, loader: Loader) -> int:
        """How many gets of `key` are waiting on a load now (a subclass may count better)."""
        return loader.calls

    # -- miss, hit, what is a hit --------------------------------------------------------------

    async def test_miss_calls_loader_once_and_stores(self, make: Make) -> None:
        cache = await make()
        events = recorded(cache)
        loader = Loader({"id": "12345"})
        assert await cache.get("policy:12345", loader, ttl=60) == {"id": "12345"}
        assert loader.calls == 1
        assert await cache.redis.exists(cache.key("policy:12345")) == 1
        assert kinds(events, MISS) == [("policy:12345", SOURCE)]
        stats = cache.stats.as_dict()
        assert (stats["misses"], stats["loads"], stats["sets"]) == (1, 1, 1)

    async def test_hit_does_not_call_the_loader(self, make: Make) -> None:
        writer, reader = await make(), await make()  # the reader has nothing of its own yet
        await writer.get("policy:1", Loader({"premium": 1200}))
        events = recorded(reader)
        loader = Loader("not this")
        assert await reader.get("policy:1", loader) == {"premium": 1200}
        assert await reader.get("policy:1", loader) == {"premium": 1200}
        assert loader.calls == 0
        assert [key for key, _ in kinds(events, HIT)] == ["policy:1", "policy:1"]
        assert reader.stats.hit_rate == 1.0

    @pytest.mark.parametrize("falsy", FALSY, ids=repr)
    async def test_falsy_value_is_a_hit(self, make: Make, falsy: object) -> None:
        """Mistake 1: the lab tested `if (cached)`, so a cached 0 or "" was loaded every time."""
        writer, reader = await make(), await make()
        assert await writer.get("k", Loader(falsy)) == falsy
        loader = Loader("not this")
        result = await reader.get("k", loader)
        assert result == falsy and type(result) is type(falsy)
        assert loader.calls == 0

    async def test_set_value_is_served_without_the_loader(self, make: Make) -> None:
        cache = await make()
        await cache.set("quote:a", [1, 2], ttl=30)
        loader = Loader("not this")
        assert await cache.get("quote:a", loader) == [1, 2]
        assert loader.calls == 0
        assert 29_000 < await cache.redis.pttl(cache.key("quote:a")) <= 30_000

    async def test_ttl_is_set_on_the_redis_key(self, make: Make) -> None:
        cache = await make()
        await cache.get("k", Loader(1), ttl=30)
        assert 29_000 < await cache.redis.pttl(cache.key("k")) <= 30_000

    # -- None and failing loaders --------------------------------------------------------------

    async def test_none_is_not_cached_without_negative_ttl(self, make: Make) -> None:
        cache = await make()
        loader = Loader(None)
        assert await cache.get("missing", loader) is None
        assert await cache.get("missing", loader) is None
        assert loader.calls == 2
        assert await cache.redis.exists(cache.key("missing")) == 0

    async def test_none_is_cached_with_negative_ttl(self, make: Make) -> None:
        writer = await make(negative_ttl=5)
        await writer.get("missing", Loader(None), ttl=600)
        assert 0 < await writer.redis.pttl(writer.key("missing")) <= 5_000  # not the 600 s
        reader = await make(negative_ttl=5)
        loader = Loader("not this")
        assert await reader.get("missing", loader) is None
        assert loader.calls == 0

    async def test_loader_error_reaches_the_caller_and_nothing_is_stored(self, make: Make) -> None:
        cache = await make()
        events = recorded(cache)
        loader = Loader(error=RuntimeError("db down"))
        with pytest.raises(RuntimeError, match="db down"):
            await cache.get("policy:7", loader)
        assert loader.calls == 1
        assert await cache.redis.exists(cache.key("policy:7")) == 0
        errors = [e for e in events if e.kind == ERROR]
        assert [(e.key, e.level, e.detail) for e in errors] == [
            ("policy:7", SOURCE, "loader: RuntimeError: db down")
        ]
        stats = cache.stats.as_dict()  # a load was made; no request was served; Redis was fine
        assert (stats["loads"], stats["misses"], stats["errors"]) == (1, 0, 0)
        with pytest.raises(RuntimeError, match="db down"):  # and the next get asks again
            await cache.get("policy:7", loader)
        assert loader.calls == 2

    # -- invalidation ----------------------------------------------------------------------------

    async def test_invalidate_makes_the_next_get_load(self, make: Make) -> None:
        cache = await make()
        await cache.get("policy:1", Loader("old"))
        await cache.get("policy:2", Loader("other"))
        assert await cache.invalidate("policy:1", "policy:absent") == 1
        loader = Loader("new")
        assert await cache.get("policy:1", loader) == "new"
        assert loader.calls == 1
        assert await cache.get("policy:2", loader) == "other"
        assert cache.stats.as_dict()["invalidations"] == 1
        assert await cache.invalidate() == 0

    async def test_invalidate_pattern_removes_only_matching_keys(
        self, make: Make, namespace: str
    ) -> None:
        """A `[` in the namespace is literal: `ns[a]:` must not reach the sibling `nsa:`."""
        cache = await make(namespace=namespace + "[a]:")
        sibling = await make(namespace=namespace + "a:")
        for i in range(30):
            await cache.set(f"policy:{i}", i)
        await cache.set("xpolicy:19", "other")
        await sibling.set("policy:1", "sibling's")
        before = await command_counts(cache.redis)
        assert await cache.invalidate_pattern("policy:1*", count=5) == 11  # 1 and 10..19
        sent = await commands_sent(cache.redis, before)
        assert "keys" not in sent and sent["scan"] >= 2  # mistake 2: SCAN pages, never KEYS
        left = {i for i in range(30) if await cache.redis.exists(cache.key(f"policy:{i}"))}
        assert left == set(range(30)) - {1, *range(10, 20)}
        assert await cache.get("xpolicy:19", Loader("reloaded")) == "other"
        assert await cache.get("policy:1", Loader("reloaded")) == "reloaded"
        assert await sibling.get("policy:1", Loader("reloaded")) == "sibling's"

    async def test_keys_outside_the_namespace_are_never_touched(
        self, make: Make, namespace: str, redis: aioredis.Redis
    ) -> None:
        outside = {namespace + "other:k": b"1", namespace + "k": b"2", namespace + "in": b"3"}
        for key, value in outside.items():
            await redis.set(key, value)
        cache = await make(namespace=namespace + "in:")
        await cache.get("k", Loader("v"))
        await cache.set("other:k", "v")
        assert await cache.invalidate("k", "other:k") == 2
        await cache.set("k", "v")
        assert await cache.invalidate_pattern("*") == 1
        assert {key: await redis.get(key) for key in outside} == outside

    # -- bad input -------------------------------------------------------------------------------

    async def test_bad_key_is_refused_before_redis_is_called(
        self, make: Make, fresh_server: RedisServer
    ) -> None:
        cache = await make(fresh_server.url)
        before = await command_counts(cache.redis)
        loader = Loader("v")
        for key in BAD_KEYS:
            with pytest.raises((TypeError, ValueError), match="cache key"):
                await cache.get(key, loader)  # type: ignore[arg-type]
            with pytest.raises((TypeError, ValueError), match="cache key"):
                await cache.set(key, "v")  # type: ignore[arg-type]
            with pytest.raises((TypeError, ValueError), match="cache key"):
                await cache.invalidate("ok", key)  # type: ignore[arg-type]
        assert loader.calls == 0
        assert await commands_sent(cache.redis, before) == {}

    @pytest.mark.parametrize("ttl", [0, -1, -0.5])
    async def test_ttl_not_positive_is_a_value_error(self, make: Make, ttl: float) -> None:
        cache = await make()
        loader = Loader("v")
        with pytest.raises(ValueError, match="positive"):
            await cache.get("k", loader, ttl=ttl)
        with pytest.raises(ValueError, match="positive"):
            await cache.set("k", "v", ttl=ttl)
        assert loader.calls == 0
        assert await cache.redis.exists(cache.key("k")) == 0

    # -- concurrency -----------------------------------------------------------------------------

    async def test_concurrent_misses_of_one_key(self, make: Make) -> None:
        """N gets of one missing key at once: one load with single-flight, else N (documented)."""
        cache = await make()
        n = 20
        gate = asyncio.Event()
        loader = Loader("v")

        async def slow() -> object:
            value = await loader()
            await gate.wait()
            return value

        tasks = [asyncio.create_task(cache.get("cold", slow)) for _ in range(n)]

        async def all_waiting() -> bool:
            return await self.waiting(cache, "cold", loader) == n

        await until(all_waiting, f"{n} gets of a missing key waiting on its load")
        gate.set()
        assert await asyncio.gather(*tasks) == ["v"] * n
        assert loader.calls == (1 if self.coalesces else n)
        stats = cache.stats.as_dict()
        assert stats["loads"] == loader.calls
        assert stats.get("coalesced", 0) == n - loader.calls  # the gets that shared a load
        again = Loader("not this")
        assert await cache.get("cold", again) == "v"
        assert again.calls == 0

    # -- limits and failures ---------------------------------------------------------------------

    async def test_value_over_max_value_bytes_is_served_not_cached(self, make: Make) -> None:
        cache = await make(max_value_bytes=1_000)
        events = recorded(cache)
        big = "x" * 2_000
        assert await cache.get("big", Loader(big)) == big
        assert await cache.redis.exists(cache.key("big")) == 0
        assert kinds(events, REJECTED) == [("big", L2)]
        loader = Loader(big)
        assert await cache.get("big", loader) == big  # not cached at any level: loaded again
        assert loader.calls == 1
        assert await cache.get("small", Loader("x" * 10)) == "x" * 10
        assert await cache.redis.exists(cache.key("small")) == 1

    async def test_redis_down_returns_the_loader_result(
        self, make: Make, fresh_server: RedisServer
    ) -> None:
        """Mistake 7: with Redis gone, the loader runs once and its value is the answer."""
        cache = await make(fresh_server.url)
        await cache.set("other", "v")  # connected and working first
        fresh_server.stop()
        events = recorded(cache)
        loader = Loader({"premium": 1200})
        assert await cache.get("policy:1", loader) == {"premium": 1200}
        assert loader.calls == 1
        assert kinds(events, FALLBACK) == [("policy:1", SOURCE)]
        assert ("policy:1", L2) in kinds(events, ERROR)
        assert cache.stats.as_dict()["errors"] == 1

    @pytest.mark.admin
    async def test_failed_store_does_not_reload(
        self, make: Make, redis: aioredis.Redis, redis_url: str, namespace: str
    ) -> None:
        """Mistake 7: when only the write fails, the loader is not called a second time."""
        user = f"ro-{namespace.rstrip(':')}"
        await redis.acl_setuser(
            user, enabled=True, nopass=True, keys=["*"], channels=["*"], reset=True,
            commands=["+@read", "+@connection", "+@pubsub"],
        )  # fmt: skip
        try:
            cache = await make(redis_url, username=user, password="x")
            events = recorded(cache)
            loader = Loader("v")
            assert await cache.get("k", loader) == "v"  # GET works; SET is refused by the ACL
            assert loader.calls == 1
            assert cache.stats.as_dict()["errors"] == 1
            assert kinds(events, ERROR) == [("k", L2)]
        finally:
            await redis.acl_deluser(user)

    async def test_corrupt_entry_is_a_miss_deleted_and_reported_by_key(self, make: Make) -> None:
        cache = await make()
        await cache.redis.set(cache.key("k"), b"\xff{not json")
        events = recorded(cache)
        loader = Loader({"ok": True})
        assert await cache.get("k", loader) == {"ok": True}
        assert loader.calls == 1
        assert kinds(events, ERROR) == [("k", L2)]  # the caller's key, not the Redis key
        assert cache.stats.as_dict()["errors"] == 1
        reader = await make()
        assert await reader.get("k", loader) == {"ok": True}
        assert loader.calls == 1
