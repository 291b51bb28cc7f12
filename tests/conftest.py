"""Fixtures for the library tests; the suite's own redis-server is started by ../conftest.py."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer, free_port
from labcache.multilevel import MultiLevelCache

_ids = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "admin: needs admin rights on the suite's Redis (ACL SETUSER, FLUSHDB, CLIENT KILL); "
        "skipped when LABCACHE_TEST_REDIS_URL names a server of someone else's",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an external server (e.g. as a restricted ACL user), skip what needs its admin."""
    from conftest import SERVER

    if SERVER is not None:
        return
    skip = pytest.mark.skip(reason="needs admin rights on the suite's own redis-server")
    for item in items:
        if "admin" in item.keywords or "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["LABCACHE_TEST_REDIS_URL"]


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    from conftest import SERVER

    assert SERVER is not None, "this run uses an external LABCACHE_TEST_REDIS_URL"
    return SERVER


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests never see each other's keys."""
    return f"t{os.getpid()}-{next(_ids)}:"


@pytest.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    async for key in client.scan_iter(match=namespace + "*", count=1000):
        await client.unlink(key)
    await client.aclose()


@pytest.fixture
async def cache(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MultiLevelCache]:
    """A `MultiLevelCache` with its defaults in the test's namespace, closed afterwards (a test
    module that needs other options defines its own `cache`)."""
    async with MultiLevelCache(redis, namespace=namespace) as c:
        yield c


@pytest.fixture
def fresh_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (for killing, restarting, counting every command)."""
    with RedisServer(port=free_port()) as server:
        yield server
