"""Server-assisted invalidation: Redis itself says when a key under our namespace changes.

The backplane only hears about writes made through labcache. A `redis-cli SET`, another service,
an EXPIRE or a FLUSHDB never reach it, and L1 would keep serving the old value. With
`CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <namespace>` (Redis 6+), the server publishes the
name of every changed key under the prefix on `__redis__:invalidate` to a connection of ours.

Two dedicated connections do it: a *listener* subscribed in RESP2 (the redirect target), and a
*control* connection that owns the tracking state. If either is replaced or lost, changes may have
gone unheard, so L1 is flushed and tracking set up again from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from labcache.errors import LabcacheError
from labcache.tasks import BackgroundListener

logger = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"


class TrackingLost(LabcacheError, RuntimeError):
    """A tracking connection was replaced: what changed meanwhile is unknown."""


class KeyTracking(BackgroundListener):
    """Calls `on_keys` with every changed key under `prefix`, and `on_flush` when in doubt."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        on_keys: Callable[[list[str]], None],
        on_flush: Callable[[str], None],
    ) -> None:
        super().__init__(f"tracking:{prefix}")
        self.redis = redis
        self.prefix = prefix
        self.on_keys, self.on_flush = on_keys, on_flush
        self.restarts = 0
        self._failure: BaseException | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Set tracking up in the background; return once the server tracks our prefix."""
        await super().start(timeout)
        if self._failure is not None:
            raise RuntimeError(
                f"server-assisted tracking is unavailable (needs Redis 6+): {self._failure}"
            ) from self._failure

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._session()
            except ResponseError as exc:  # the server does not know CLIENT TRACKING
                self._failure = exc
                self._ready.set()
                return
            except (RedisError, OSError, TrackingLost) as exc:
                self._ready.clear()
                self.restarts += 1
                self.on_flush(f"tracking interrupted: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _dedicated_client(self) -> aioredis.Redis:
        """A one-connection client like ours, in RESP2 (redirected invalidations are pub/sub)."""
        source = self.redis.connection_pool
        kwargs = {
            k: v
            for k, v in source.connection_kwargs.items()
            if not k.startswith(("maint_notifications", "orig_"))  # RESP3-only machinery
        }
        kwargs["protocol"] = 2
        pool = aioredis.ConnectionPool(
            connection_class=source.connection_class, max_connections=1, **kwargs
        )
        return aioredis.Redis(connection_pool=pool, single_connection_client=True)

    async def _session(self) -> None:
        listener, control = self._dedicated_client(), self._dedicated_client()
        pubsub = listener.pubsub()
        try:
            listener_id = await listener.client_id()
            await listener.aclose()  # gives the one connection back; pubsub takes it next
            await pubsub.subscribe(CHANNEL)
            await control.client_tracking_on(clientid=listener_id, prefix=[self.prefix], bcast=True)
            control_id = await control.client_id()
            self.on_flush("tracking started")  # anything cached before now was not tracked
            self._ready.set()
            await self._listen(pubsub, control, control_id)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            for client in (control, listener):
                with contextlib.suppress(Exception):
                    await client.aclose()
                    await client.connection_pool.disconnect()

    async def _listen(
        self, pubsub: aioredis.client.PubSub, control: aioredis.Redis, cid: int
    ) -> None:
        confirmations = 0
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:  # idle: check the control connection still owns tracking
                if await control.client_id() != cid:
                    raise TrackingLost("control connection was replaced")
                continue
            if message["type"] == "subscribe":
                confirmations += 1
                if confirmations > 1:
                    raise TrackingLost("listener connection was replaced")
            elif message["type"] == "message":
                keys = message["data"]
                if keys is None:  # FLUSHDB / FLUSHALL
                    self.on_flush("the server flushed the database")
                else:
                    self.on_keys([k.decode() if isinstance(k, bytes) else k for k in keys])
                await self._applied()
