"""Issue 10: bad input gets a clear error or a defined behaviour, on both caches, on a real Redis.

Defined behaviours (the README's "Failure modes" says the same):
- keys are non-empty str of at most 1024 characters; spaces, unicode, newlines and glob
  characters are ordinary key characters (escape them with `glob_escape` in a pattern);
- TTLs are positive finite numbers of seconds (not bool), else ValueError, on every path;
- a value over `max_value_bytes` (serialised) is served to the caller but not cached, with a
  REJECTED event; `set()` of one raises ValueTooLarge;
- a value the serializer cannot encode raises SerializationError (a TypeError) naming the key;
- bytes under our key that are not ours are a miss: deleted and replaced (a key of another
  Redis type is left alone and served by the loader, with an ERROR event);
- caching is type-agnostic: a value comes back from Redis as JSON made it (a tuple as a list).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labcache.aside import CacheAside, ValueTooLarge
from labcache.events import ERROR, FALLBACK, HIT, L2, MISS, REJECTED, CacheEvent
from labcache.keys import canonical_json, glob_escape, request_key
from labcache.multilevel import Guard, MultiLevelCache
from labcache.serializers import SerializationError
from tests.helpers import Loader

Cache = CacheAside | MultiLevelCache


@pytest.fixture(params=["aside", "multilevel"])
def make(
    request: pytest.FixtureRequest, redis: aioredis.Redis, namespace: str
) -> Callable[..., Cache]:
    """Builds the parametrised cache kind on the test's namespace (no backplane)."""

    def build(**kwargs: Any) -> Cache:
        if request.param == "aside":
            return CacheAside(redis, namespace=namespace, **kwargs)
        if "max_value_bytes" in kwargs:  # a Guard's option on a MultiLevelCache
            kwargs["guard"] = Guard(max_value_bytes=kwargs.pop("max_value_bytes"))
        return MultiLevelCache(redis, namespace=namespace, backplane=False, **kwargs)

    return build


@pytest.fixture
def cache(make: Callable[..., Cache]) -> Cache:
    return make()


def record(cache: Cache) -> list[CacheEvent]:
    events: list[CacheEvent] = []
    cache.events.subscribe(events.append)
    return events


def served_from(events: list[CacheEvent]) -> list[str]:
    return [f"{e.kind} {e.level}" for e in events if e.kind in (HIT, MISS, FALLBACK)]


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        ("", ValueError, "must not be empty"),
        ("k" * 1025, ValueError, "1025 characters; the limit is 1024"),
        (1, TypeError, "must be a str, not int"),
        (None, TypeError, "must be a str, not NoneType"),
        (b"policy:1", TypeError, "must be a str, not bytes"),
        (("policy", 1), TypeError, "must be a str, not tuple"),
    ],
)
async def test_bad_keys_are_refused_with_a_clear_error(
    cache: Cache, key: Any, error: type[Exception], message: str
) -> None:
    loader = Loader("v")
    with pytest.raises(error, match=message):
        await cache.get(key, loader)
    with pytest.raises(error, match=message):
        await cache.set(key, "v")
    with pytest.raises(error, match=message):
        await cache.invalidate(key)
    assert loader.calls == 0


@pytest.mark.parametrize(
    "key",
    [
        "k" * 1024,
        "policy holder: Ada Lovelace",
        "política:ñandú",
        "保険:証券",
        "emoji:🚗",
        "line\nbreak",
        "tab\there",
        "glob:*",
        "glob:?",
        "glob:[ab]",
        "glob:back\\slash",
        "colon::and::more",
    ],
)
async def test_unusual_but_valid_keys_round_trip(cache: Cache, key: str) -> None:
    loader = Loader({"id": key})
    assert await cache.get(key, loader) == {"id": key}
    assert await cache.redis.exists(cache.key(key)) == 1
    if isinstance(cache, MultiLevelCache):
        cache.clear_l1()
    assert await cache.get(key, loader) == {"id": key}  # from Redis
    assert loader.calls == 1
    assert await cache.invalidate(key) == 1
    assert await cache.redis.exists(cache.key(key)) == 0


async def test_escaped_glob_invalidates_only_the_literal_key(cache: Cache) -> None:
    """A key full of glob characters, escaped, removes itself and nothing it would match."""
    literal = "policy:1*[ab]?\\"
    neighbours = ["policy:10[ab]x\\", "policy:1x[ab]?\\", "policy:1*a?\\", "policy:1*[ab]!\\"]
    for key in [literal, *neighbours]:
        await cache.set(key, key)
    assert await cache.invalidate_pattern(glob_escape(literal)) == 1
    for key in neighbours:
        assert await cache.redis.exists(cache.key(key)) == 1, key
    if isinstance(cache, MultiLevelCache):  # L1 follows the same rules
        assert set(cache.l1.keys()) == {cache.key(k) for k in neighbours}
    # Unescaped, the same text is a pattern and over-matches: that is what glob_escape is for.
    assert await cache.invalidate_pattern(literal) >= 1


# -- TTLs ----------------------------------------------------------------------------------------

BAD_TTLS = [math.nan, math.inf, -math.inf, -1, 0, 0.0, True, False, "10", [10]]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
async def test_bad_ttls_are_refused_on_every_path(cache: Cache, ttl: Any) -> None:
    loader = Loader("v")
    await cache.get("warm", loader)  # now in L1 (multi-level) and Redis
    for key in ("cold", "warm"):  # a miss, and a hit: a bad TTL is an error either way
        with pytest.raises(ValueError, match="must be a positive number of seconds"):
            await cache.get(key, loader, ttl=ttl)
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        await cache.set("k", "v", ttl=ttl)
    assert loader.calls == 1
    assert await cache.redis.exists(cache.key("cold"), cache.key("k")) == 0


@pytest.mark.parametrize("ttl", [math.nan, -5, 0, True], ids=repr)
def test_bad_default_ttls_are_refused_at_construction(make: Callable[..., Cache], ttl: Any) -> None:
    with pytest.raises(ValueError, match="default_ttl must be a positive number"):
        make(default_ttl=ttl)


async def test_a_tiny_ttl_is_rounded_up_not_to_forever(cache: Cache) -> None:
    await cache.set("k", "v", ttl=0.0001)  # PX 0 would be an error; PX 1 expires at once
    assert await cache.redis.pttl(cache.key("k")) in (-2, 0, 1)


# -- values --------------------------------------------------------------------------------------


async def test_oversized_value_is_served_but_not_cached(make: Callable[..., Cache]) -> None:
    cache = make(max_value_bytes=1000)
    events = record(cache)
    big = {"notes": "x" * 2000}
    loader = Loader(big)
    assert await cache.get("big", loader) == big
    assert await cache.get("big", loader) == big
    assert loader.calls == 2  # not cached anywhere: each read asks the loader
    assert await cache.redis.exists(cache.key("big")) == 0
    if isinstance(cache, MultiLevelCache):
        assert cache.key("big") not in cache.l1
    rejected = [e for e in events if e.kind == REJECTED]
    assert len(rejected) == 2 and rejected[0].level == L2 and rejected[0].key == "big"
    assert "over max_value_bytes=1000" in rejected[0].detail
    assert served_from(events) == ["miss source", "miss source"]
    small = Loader({"notes": "x" * 900})
    await cache.get("small", small)
    await cache.get("small", small)
    assert small.calls == 1


async def test_set_of_an_oversized_value_raises(make: Callable[..., Cache]) -> None:
    cache = make(max_value_bytes=100)
    events = record(cache)
    with pytest.raises(ValueTooLarge, match="over max_value_bytes=100"):
        await cache.set("big", "y" * 200)
    assert await cache.redis.exists(cache.key("big")) == 0
    assert [e.kind for e in events] == [REJECTED]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "1000"], ids=repr)
def test_bad_max_value_bytes_is_refused(make: Callable[..., Cache], limit: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="max_value_bytes"):
        make(max_value_bytes=limit)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), b"bytes", {"nan": math.nan}, {"inf": math.inf}, {("tuple", "key"): 1}],
    ids=["set", "object", "bytes", "nan", "inf", "tuple-key"],
)
async def test_values_json_cannot_encode_raise_naming_the_key(cache: Cache, value: Any) -> None:
    loader = Loader(value)
    with pytest.raises(SerializationError, match="policy:1"):
        await cache.get("policy:1", loader)
    assert loader.calls == 1
    with pytest.raises(SerializationError, match="policy:1"):
        await cache.set("policy:1", value)
    assert isinstance(SerializationError("x"), TypeError)
    assert await cache.redis.exists(cache.key("policy:1")) == 0
    if isinstance(cache, MultiLevelCache):
        assert cache.key("policy:1") not in cache.l1


async def test_caching_is_type_agnostic_json_decides_what_comes_back(cache: Cache) -> None:
    """The loader's type is not checked: Redis returns what JSON made of it (document it)."""
    assert await cache.get("t", Loader((1, 2))) == (1, 2)  # the loader's own object
    if isinstance(cache, MultiLevelCache):
        assert await cache.get("t", Loader(None)) == (1, 2)  # L1 keeps the object itself
    assert await cache.get("t", Loader(None), **_from_redis(cache)) == [1, 2]  # JSON's list
    assert await cache.get("d", Loader({1: "a"})) == {1: "a"}
    assert await cache.get("d", Loader(None), **_from_redis(cache)) == {"1": "a"}


def _from_redis(cache: Cache) -> dict[str, Any]:
    return {"skip_memory": True} if isinstance(cache, MultiLevelCache) else {}


async def test_falsy_values_are_hits_and_none_is_not_cached(cache: Cache) -> None:
    for i, value in enumerate([0, "", [], {}, False]):
        loader = Loader(value)
        assert await cache.get(f"falsy:{i}", loader) == value
        assert await cache.get(f"falsy:{i}", loader, **_from_redis(cache)) == value
        assert loader.calls == 1
    none = Loader(None)
    assert await cache.get("none", none) is None
    assert await cache.get("none", none) is None
    assert none.calls == 2  # None means "not found": not cached without negative_ttl


async def test_a_loader_that_is_not_async_is_a_type_error(cache: Cache) -> None:
    with pytest.raises(TypeError):
        await cache.get("k", lambda: {"sync": True})  # type: ignore[arg-type,return-value]
    assert await cache.redis.exists(cache.key("k")) == 0


# -- corrupt or foreign data under our keys ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe not json", b"lc:garbage", b"lc:1:2", b"{truncated", b"plain text"],
    ids=["binary", "bad-header", "short-header", "truncated-json", "text"],
)
async def test_corrupt_bytes_are_a_miss_and_are_replaced(cache: Cache, raw: bytes) -> None:
    await cache.redis.set(cache.key("k"), raw)
    events = record(cache)
    loader = Loader({"ok": True})
    assert await cache.get("k", loader) == {"ok": True}
    assert await cache.get("k", loader, **_from_redis(cache)) == {"ok": True}
    assert loader.calls == 1
    assert await cache.redis.get(cache.key("k")) != raw
    errors = [e for e in events if e.kind == ERROR]
    assert len(errors) == 1 and "corrupt" in errors[0].detail


async def test_the_other_cache_kinds_records_are_foreign(
    redis: aioredis.Redis, namespace: str
) -> None:
    """CacheAside stores bare JSON; MultiLevelCache a header + JSON: on one namespace each
    treats the other's record as foreign, replaces it and still answers correctly."""
    aside = CacheAside(redis, namespace=namespace)
    multi = MultiLevelCache(redis, namespace=namespace, backplane=False)
    await aside.set("k", {"by": "aside"})
    assert await multi.get("k", Loader({"by": "multi"})) == {"by": "multi"}
    assert (await redis.get(multi.key("k"))).startswith(b"lc:")
    assert await aside.get("k", Loader({"by": "aside"})) == {"by": "aside"}
    assert json.loads(await redis.get(aside.key("k"))) == {"by": "aside"}


async def test_a_key_of_another_type_is_left_alone_and_served_by_the_loader(
    cache: Cache,
) -> None:
    await cache.redis.hset(cache.key("k"), mapping={"not": "ours"})
    events = record(cache)
    loader = Loader("v")
    for _ in range(2):
        assert await cache.get("k", loader, **_from_redis(cache)) == "v"
    assert loader.calls == 2
    assert await cache.redis.type(cache.key("k")) == b"hash"  # not deleted: not ours to delete
    assert served_from(events) == ["fallback source"] * 2
    assert all("WRONGTYPE" in e.detail for e in events if e.kind == ERROR)
    breaker = cache.breaker
    assert breaker is not None and breaker.state == "closed"  # an error reply is not an outage


# -- canonical request keys (property tests) -----------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
requests = st.dictionaries(st.text(max_size=12), values, max_size=6)


def _reordered(value: Any, order: int) -> Any:
    """The same mapping with its fields inserted in another order (recursively)."""
    if isinstance(value, dict):
        items = list(value.items())
        items = items[order % len(items) :] + items[: order % len(items)] if items else []
        return {k: _reordered(v, order + 1) for k, v in reversed(items)}
    if isinstance(value, list):
        return [_reordered(v, order) for v in value]
    return value


@settings(derandomize=True, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.integers(min_value=0, max_value=10))
def test_field_order_never_changes_the_key(request: dict[str, Any], order: int) -> None:
    shuffled = _reordered(request, order)
    assert shuffled == request
    key = request_key("quote", shuffled)
    assert key == request_key("quote", request)
    assert key.startswith("quote:") and len(key) == len("quote:") + 16  # short, fixed length
    assert glob_escape(key) == key  # hex digits: safe inside a pattern as they are


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=repr)
def test_non_json_numbers_in_a_request_are_refused(bad: float) -> None:
    """NaN != NaN: two "equal" requests would not be equal, so NaN and infinity get no key."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        request_key("quote", {"driver_age": bad})


@settings(derandomize=True, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(requests, requests)
def test_distinct_requests_get_distinct_keys(a: dict[str, Any], b: dict[str, Any]) -> None:
    """64 bits of SHA-256: a collision among a few hundred requests would be a bug, not luck."""
    if a != b:
        assert canonical_json(a) != canonical_json(b)
        assert request_key("quote", a) != request_key("quote", b)
    if a.get("__extra__") != 1:  # one more field is another request
        assert request_key("quote", {**a, "__extra__": 1}) != request_key("quote", a)
