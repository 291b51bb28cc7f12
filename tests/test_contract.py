"""The cache-aside contract (tests/contract.py) run against CacheAside and MultiLevelCache.

Each class gives the contract its factory: caches on the suite's redis-server (or on the server
a test names), in the test's own namespace, closed after the test with the clients they used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from labcache.aside import CacheAside
from labcache.multilevel import Guard, MultiLevelCache
from tests.contract import Cache, CacheContract, Make
from tests.helpers import Loader


class Clients:
    """The suite's client, or one of the test's own for another server (closed after)."""

    def __init__(self, suite: aioredis.Redis) -> None:
        self.suite = suite
        self.opened: list[aioredis.Redis] = []

    def get(self, url: str | None, username: str | None, password: str | None) -> aioredis.Redis:
        if url is None:
            return self.suite
        client = aioredis.from_url(
            url, username=username, password=password, socket_connect_timeout=0.5
        )
        self.opened.append(client)
        return client

    async def close(self) -> None:
        for client in self.opened:
            await client.aclose()


class TestCacheAside(CacheContract):
    coalesces = False  # labcache.aside documents it: no stampede protection, N misses N loads

    @pytest.fixture
    async def make(self, redis: aioredis.Redis, namespace: str) -> AsyncIterator[Make]:
        clients, own = Clients(redis), namespace

        async def make(
            url: str | None = None,
            *,
            username: str | None = None,
            password: str | None = None,
            namespace: str | None = None,
            negative_ttl: float | None = None,
            max_value_bytes: int | None = None,
        ) -> CacheAside:
            return CacheAside(
                clients.get(url, username, password),
                namespace=own if namespace is None else namespace,
                negative_ttl=negative_ttl,
                max_value_bytes=max_value_bytes,
            )

        yield make
        await clients.close()


class TestMultiLevelCache(CacheContract):
    coalesces = True  # single-flight is on by default (Stampede.single_flight)

    @pytest.fixture
    async def make(self, redis: aioredis.Redis, namespace: str) -> AsyncIterator[Make]:
        clients, own = Clients(redis), namespace
        made: list[MultiLevelCache] = []

        async def make(
            url: str | None = None,
            *,
            username: str | None = None,
            password: str | None = None,
            namespace: str | None = None,
            negative_ttl: float | None = None,
            max_value_bytes: int | None = None,
        ) -> MultiLevelCache:
            cache = MultiLevelCache(
                clients.get(url, username, password),
                namespace=own if namespace is None else namespace,
                negative_ttl=negative_ttl,
                guard=Guard(max_value_bytes=max_value_bytes),
            )
            made.append(cache)
            return await cache.start()

        yield make
        for cache in made:
            await cache.close()
        await clients.close()

    async def waiting(self, cache: Cache, key: str, loader: Loader) -> int:
        assert isinstance(cache, MultiLevelCache)
        return cache.waiting(key)  # every caller, the one loading included
