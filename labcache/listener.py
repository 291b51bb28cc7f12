"""One pub/sub listener that keeps its subscription alive, for every part that listens.

The backplane, the cluster backplane, server-assisted tracking and the lock's release channel
all do the same thing: subscribe, read messages, and when the connection fails, say so, back
off (0.05 s doubling to 2 s) and subscribe again, closing the old pubsub every time. The loop
lives here once; each part fills in the hooks that differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from labcache.tasks import BackgroundListener

logger = logging.getLogger(__name__)

# What a lost or unreachable server raises (labcache.aside.REDIS_FAILURES; not imported
# from there, since aside imports the backplane that imports this module).
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)
MIN_BACKOFF, MAX_BACKOFF = 0.05, 2.0
# Message types, classic and sharded (redis-py gives str or bytes).
SUBSCRIBED = {"subscribe", "ssubscribe", "psubscribe"}
PUBLISHED = {"message", "smessage", "pmessage"}


class PubSubListener(BackgroundListener):
    """Listens on `channel` in the background and reconnects on its own until `stop()`.

    Subclasses write `_handle(data)`; they may also override `_open`/`_subscribe` (how to
    subscribe), `_read` (the next message), `_idle`, `_subscribed`, `_lost` and `_close`.
    `failures` are the errors that mean "reconnect"; `fatal` ones end the listener instead
    (kept in `failure`; `start()` returns once the task has ended, so its caller can read it).
    """

    failures: tuple[type[BaseException], ...] = CONNECTION_FAILURES
    fatal: tuple[type[BaseException], ...] = ()

    def __init__(self, redis: aioredis.Redis | RedisCluster, channel: str, name: str) -> None:
        super().__init__(name)
        self.redis = redis
        self.channel = channel
        self.failure: BaseException | None = None

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            pubsub = self._open()
            try:
                await self._subscribe(pubsub)
                confirmations = 0
                while True:
                    message = await self._read(pubsub)
                    if message is None:
                        await self._idle()
                        continue
                    kind = _text(message["type"])
                    if kind in SUBSCRIBED:
                        confirmations += 1
                        await self._subscribed(again=confirmations > 1)
                        self._ready.set()
                        backoff = MIN_BACKOFF
                    elif kind in PUBLISHED:
                        await self._handle(message["data"])
            except self.fatal as exc:
                self.failure = exc  # the task ends, start() returns: the owner reads this
                return
            except self.failures as exc:
                self._ready.clear()
                self._lost(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await self._close()

    # -- hooks ---------------------------------------------------------------------------------

    def _open(self) -> Any:
        """A new pubsub object (not connected yet)."""
        return self.redis.pubsub()

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(self.channel)

    async def _read(self, pubsub: Any) -> dict[str, Any] | None:
        """The next message, or None after a second without one."""
        message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
        return message

    async def _idle(self) -> None:
        """Called after each second without a message (a place for health checks)."""

    async def _subscribed(self, again: bool) -> None:
        """A subscription was confirmed; `again` when this connection had one already."""

    async def _handle(self, data: Any) -> None:
        raise NotImplementedError

    def _lost(self, exc: BaseException) -> None:
        """The connection failed; the loop backs off, then subscribes again."""
        logger.warning("%s lost its connection (%s: %s); reconnecting", self.name,
                       type(exc).__name__, exc)  # fmt: skip

    async def _close(self) -> None:
        """Called after each pubsub is closed (release what `_open` made besides it)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
