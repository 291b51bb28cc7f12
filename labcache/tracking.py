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

import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from labcache.errors import LabcacheError
from labcache.listener import PubSubListener

logger = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"


class TrackingLost(LabcacheError, RuntimeError):
    """A tracking connection was replaced: what changed meanwhile is unknown."""


class KeyTracking(PubSubListener):
    """Calls `on_keys` with every changed key under `prefix`, and `on_flush` when in doubt."""

    failures = (*PubSubListener.failures, TrackingLost)
    fatal = (ResponseError,)  # the server does not know CLIENT TRACKING

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        *,
        on_keys: Callable[[list[str]], None],
        on_flush: Callable[[str], None],
    ) -> None:
        super().__init__(redis, CHANNEL, f"tracking:{prefix}")
        self.redis: aioredis.Redis = redis
        self.prefix = prefix
        self.on_keys, self.on_flush = on_keys, on_flush
        self.restarts = 0
        # The session's two connections, made anew by each `_open()`.
        self._listener: aioredis.Redis
        self._control: aioredis.Redis
        self._control_id = -1

    async def start(self, timeout: float = 5.0) -> None:
        """Set tracking up in the background; return once the server tracks our prefix."""
        await super().start(timeout)
        if self.failure is not None:
            raise RuntimeError(
                f"server-assisted tracking is unavailable (needs Redis 6+): {self.failure}"
            ) from self.failure

    def _open(self) -> aioredis.client.PubSub:
        self._listener, self._control = self._dedicated_client(), self._dedicated_client()
        return self._listener.pubsub()

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        listener_id = await self._listener.client_id()
        await self._listener.aclose()  # gives the one connection back; pubsub takes it next
        await pubsub.subscribe(CHANNEL)
        await self._control.client_tracking_on(
            clientid=listener_id, prefix=[self.prefix], bcast=True
        )
        self._control_id = await self._control.client_id()
        self.on_flush("tracking started")  # anything cached before now was not tracked

    async def _idle(self) -> None:
        # Check the control connection still owns tracking (redis-py reconnects silently).
        if await self._control.client_id() != self._control_id:
            raise TrackingLost("control connection was replaced")

    async def _subscribed(self, again: bool) -> None:
        if again:
            raise TrackingLost("listener connection was replaced")

    async def _handle(self, keys: list[bytes | str] | None) -> None:
        if keys is None:  # FLUSHDB / FLUSHALL
            self.on_flush("the server flushed the database")
        else:
            self.on_keys([k.decode() if isinstance(k, bytes) else k for k in keys])
        await self._applied()

    def _lost(self, exc: BaseException) -> None:
        self.restarts += 1
        self.on_flush(f"tracking interrupted: {type(exc).__name__}: {exc}")

    async def _close(self) -> None:
        for client in (self._control, self._listener):
            with contextlib.suppress(Exception):
                await client.aclose()
                await client.connection_pool.disconnect()

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
