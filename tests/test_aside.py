"""CacheAside only: what the shared contract (tests/contract.py) does not cover.

The cache-aside semantics CacheAside shares with MultiLevelCache (miss, hit, falsy values, None,
failing loaders, invalidation, bad keys, Redis failures) run in tests/test_contract.py.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from labcache.aside import CacheAside
from labcache.serializers import SerializationError
from tests.helpers import Loader


@pytest.fixture
def cache(redis: aioredis.Redis, namespace: str) -> CacheAside:
    return CacheAside(redis, namespace=namespace)


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
