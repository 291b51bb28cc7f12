"""Every test talks to a real redis-server that this suite starts itself.

The server listens on a unix socket in a private folder (and on a free loopback port for tests
that need TCP). `REDIS_URL` is pointed at it before any notebook kernel starts, so nbval's
kernels use it too, and nothing here touches the Redis at localhost:6379.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer, free_port

_SERVER: RedisServer | None = None
_ids = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    global _SERVER
    if os.environ.get("LABCACHE_TEST_REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["LABCACHE_TEST_REDIS_URL"]
        return
    _SERVER = RedisServer(port=free_port()).start()
    os.environ["REDIS_URL"] = _SERVER.url
    os.environ["LABCACHE_TEST_REDIS_URL"] = _SERVER.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVER is not None:
        _SERVER.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["LABCACHE_TEST_REDIS_URL"]


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _SERVER is not None, "this run uses an external LABCACHE_TEST_REDIS_URL"
    return _SERVER


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
def fresh_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (for killing, restarting, counting every command)."""
    with RedisServer(port=free_port()) as server:
        yield server
