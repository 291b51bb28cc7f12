"""The peer libraries, set up the way their own documentation sets them up.

Each peer gets its own key prefix (their record formats are incompatible), JSON where the
library offers it (so serialisation costs the same as ours), and a blocking connection pool of
the same size as labcache's client (a burst waits for a connection instead of failing).
A peer that is not installed is reported as "not available", never faked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

POOL_SIZE = 100
PEERS = {"cashews": "cashews", "aiocache": "aiocache", "dogpile": "dogpile.cache"}
CSC_MIN_VERSION = (7, 4)


class NotAvailable(RuntimeError):
    """A contender that cannot run here; the message says why."""


def versions() -> dict[str, str]:
    """Installed versions of the client, the L1 store and every peer."""
    out = {}
    for dist in ("redis", "hiredis", "cachetools", "cashews", "aiocache", "dogpile.cache"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def require(peer: str) -> None:
    module = PEERS[peer].split(".")[0]
    if importlib.util.find_spec(module) is None:
        raise NotAvailable(
            f"not available: {PEERS[peer]} is not installed (pip install -e '.[bench]')"
        )


def _tcp(url: str, peer: str) -> tuple[str, int, int]:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or parsed.hostname is None:
        raise NotAvailable(f"not available: {peer} is set up here by host and port, not {url!r}")
    db = int(parsed.path.lstrip("/") or 0)
    return parsed.hostname, parsed.port or 6379, db


class Peers:
    """Creates peer caches and closes every one of them at the end of a scenario."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    async def close(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            await close()

    # -- cashews -------------------------------------------------------------------------

    async def cashews(self, backend: str, **params: Any) -> Any:
        """`mem`, `redis` (JSON pickler) or `client_side` (redis + BCAST tracking into memory)."""
        require("cashews")
        from cashews import Cache

        cache = Cache()
        if backend == "mem":
            cache.setup("mem://?size=10000")
        else:
            _tcp(self.url, "cashews")
            base = self.url.split("?")[0]
            if backend == "client_side":
                params = {"client_side": True, **params}
            cache.setup(f"{base}?pickle_type=json", max_connections=POOL_SIZE, **params)
        await cache.init()
        self._closers.append(cache.close)
        return cache

    # -- aiocache ------------------------------------------------------------------------

    async def aiocache(self, backend: str, namespace: str = "") -> Any:
        """`memory` (SimpleMemoryCache) or `redis` (RedisCache, JsonSerializer)."""
        require("aiocache")
        if backend == "memory":
            from aiocache import SimpleMemoryCache

            mem = SimpleMemoryCache()
            self._closers.append(mem.close)
            return mem
        return self.aiocache_kwargs(namespace)

    def aiocache_kwargs(self, namespace: str) -> dict[str, Any]:
        """What `RedisCache(**kw)` and `cached_stampede(cache=RedisCache, **kw)` take."""
        require("aiocache")
        import redis.asyncio as aioredis
        from aiocache.serializers import JsonSerializer

        host, port, db = _tcp(self.url, "aiocache")
        return {
            "endpoint": host,
            "port": port,
            "db": db,
            "namespace": namespace,
            "serializer": JsonSerializer(),
            "pool_max_size": POOL_SIZE,
            "connection_pool_class": aioredis.BlockingConnectionPool,
        }

    async def aiocache_redis(self, namespace: str) -> Any:
        from aiocache import RedisCache

        cache = RedisCache(**self.aiocache_kwargs(namespace))
        self._closers.append(cache.close)
        return cache

    # -- dogpile.cache (synchronous) -----------------------------------------------------

    def dogpile(self, backend: str, expiration_time: float = 300) -> Any:
        """A region: `memory`, or `redis` with JSON payloads (its users call it from threads)."""
        require("dogpile")
        from dogpile.cache import make_region

        if backend == "memory":
            return make_region().configure("dogpile.cache.memory", expiration_time=expiration_time)
        import redis

        # A burst from many threads waits for one of POOL_SIZE connections, like the others.
        pool = redis.BlockingConnectionPool.from_url(self.url, max_connections=POOL_SIZE)
        region = make_region(
            serializer=lambda v: json.dumps(v).encode(), deserializer=json.loads
        ).configure(
            "dogpile.cache.redis",
            expiration_time=expiration_time,
            arguments={"connection_pool": pool, "redis_expiration_time": int(expiration_time * 2)},
        )

        async def close() -> None:
            pool.disconnect()

        self._closers.append(close)
        return region

    # -- redis-py's own client-side caching ----------------------------------------------

    def redis_py_csc(self, server_version: tuple[int, ...]) -> Any:
        """redis-py 8 `CacheConfig` (RESP3): it refuses servers older than 7.4, so say so."""
        if server_version[:2] < CSC_MIN_VERSION:
            shown = ".".join(map(str, server_version))
            raise NotAvailable(f"not measurable here: needs Redis ≥ 7.4 (server is {shown})")
        import redis
        from redis.cache import CacheConfig

        client = redis.Redis.from_url(self.url, protocol=3, cache_config=CacheConfig())

        async def close() -> None:
            client.close()

        self._closers.append(close)
        return client
