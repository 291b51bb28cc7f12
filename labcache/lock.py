"""A lock per cache key in Redis, so that one process in a fleet loads a missing entry.

`DistributedLock` takes and releases the lock; its waiters are woken by a message on a release
channel (`ReleaseListener`) and poll as well. Every call it makes to Redis is bounded by
`op_timeout` and may go through a `CircuitBreaker`, like the caches' own calls.
`labcache.stampede.load_with_lock` is the verb that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from labcache.aside import ttl_ms
from labcache.breaker import DEFAULT_OP_TIMEOUT, CircuitBreaker, guarded
from labcache.listener import PubSubListener
from labcache.stats import Counters
from labcache.validate import positive_seconds, seconds

logger = logging.getLogger(__name__)

__all__ = ["RELEASE_SCRIPT", "DistributedLock", "LockOutcome", "LockStats", "ReleaseListener"]


# Compare-and-delete: only the holder's token may release; waiters are told on the same trip.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


@dataclass
class LockStats(Counters):
    """What one DistributedLock did: acquisitions, waits and how the waits ended."""

    acquired: int = 0
    waits: int = 0
    notified: int = 0  # woken by the holder's release message
    takeovers: int = 0  # took the lock while waiting (its holder died, or a message was lost)
    timeouts: int = 0  # gave up waiting
    lost: int = 0  # a release found the lock expired or held by someone else


class LockOutcome(NamedTuple):
    """How `acquire_or_wait` ended: holding the lock (`token`), woken, or timed out."""

    token: str | None
    waited: bool = False
    timed_out: bool = False


class DistributedLock:
    """A lock per cache key in Redis, so one process in a fleet loads a missing entry.

    `SET <ns>__lock__:<key> <random token> NX PX <ttl>`; release deletes the key only if it
    still holds our token (a Lua script) and publishes the key, which wakes the waiters. The
    TTL frees the lock if its holder dies; waiters poll as well, and one of them takes the
    lock over once it expires. A waiter gives up after `wait_timeout` seconds.

    Each call to Redis (the SET, the release script) is abandoned after `op_timeout` seconds
    (OperationTimeout; None leaves it to the client's own timeout) and, given a `breaker`,
    goes through it: CircuitOpen at once while Redis is known to be down.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str = "lab10:",
        *,
        ttl: float = 10.0,
        wait_timeout: float = 5.0,
        poll_interval: float = 0.05,
        ttl_factor: float = 4.0,
        min_ttl: float = 1.0,
        op_timeout: float | None = DEFAULT_OP_TIMEOUT,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, not {breaker!r}")
        self.redis = redis
        self.namespace = namespace
        self.ttl = positive_seconds(ttl, "lock ttl")
        self.wait_timeout = seconds(wait_timeout, "wait_timeout")
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.ttl_factor = positive_seconds(ttl_factor, "ttl_factor")
        self.min_ttl = positive_seconds(min_ttl, "min_ttl")
        self.op_timeout = None if op_timeout is None else positive_seconds(op_timeout, "op_timeout")
        self.breaker = breaker
        self.channel = f"{namespace}__lock_released__"
        self.stats = LockStats()
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.listener = ReleaseListener(redis, self.channel, on_release=self._wake)

    def key(self, name: str) -> str:
        return f"{self.namespace}__lock__:{name}"

    def ttl_for(self, load_time: float | None) -> float:
        """Lock TTL: a few times the last load when it is known, else the default `ttl`."""
        if load_time is None or load_time <= 0:
            return self.ttl
        return max(self.min_ttl, self.ttl_factor * load_time)

    async def acquire(self, name: str, *, ttl: float | None = None) -> str | None:
        """Try once; return the token that proves we hold the lock, or None."""
        token = secrets.token_hex(16)
        px = ttl_ms(self.ttl if ttl is None else positive_seconds(ttl, "lock ttl"))
        command = self.redis.set(self.key(name), token, nx=True, px=px)
        if await guarded(self.breaker, command, self.op_timeout):
            self.stats.acquired += 1
            return token
        return None

    async def release(self, name: str, token: str) -> bool:
        """Delete the lock if it is still ours and wake its waiters; False if it was not."""
        script = self._release(keys=[self.key(name)], args=[token, self.channel, name])
        released = bool(await guarded(self.breaker, script, self.op_timeout))
        if not released:
            self.stats.lost += 1
            logger.warning("lock on %r expired before its holder released it: raise its TTL", name)
        return released

    async def acquire_or_wait(
        self, name: str, *, ttl: float | None = None, timeout: float | None = None
    ) -> LockOutcome:
        """Take the lock, or wait until its holder releases it (then re-read the cache).

        Returns `LockOutcome(token)` when we hold it (at once, or by taking over an expired
        lock), `LockOutcome(None, waited=True)` when the holder released it, and
        `LockOutcome(None, waited=True, timed_out=True)` after `timeout` seconds.
        """
        token = await self.acquire(name, ttl=ttl)
        if token is not None:
            return LockOutcome(token)
        self.stats.waits += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wait_timeout if timeout is None else timeout)
        woken = asyncio.Event()
        self._waiters.setdefault(name, set()).add(woken)
        try:
            await self._ensure_listening()
            while (left := deadline - loop.time()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(self.poll_interval, left))
                if woken.is_set():
                    self.stats.notified += 1
                    return LockOutcome(None, waited=True)
                # Polling fallback: the holder may have died (its lock expired) or the
                # message was lost; whoever sets the lock now is the next holder.
                token = await self.acquire(name, ttl=ttl)
                if token is not None:
                    self.stats.takeovers += 1
                    return LockOutcome(token, waited=True)
            self.stats.timeouts += 1
            return LockOutcome(None, waited=True, timed_out=True)
        finally:
            waiting = self._waiters.get(name)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[name]

    @contextlib.asynccontextmanager
    async def hold(self, name: str, *, ttl: float | None = None) -> AsyncIterator[LockOutcome]:
        """`async with lock.hold(key) as got:` releases on exit if `got.token` is set."""
        outcome = await self.acquire_or_wait(name, ttl=ttl)
        try:
            yield outcome
        finally:
            if outcome.token is not None:
                await self.release(name, outcome.token)

    async def close(self) -> None:
        """Stop listening for release messages (it restarts by itself on the next wait)."""
        await self.listener.stop()

    async def _ensure_listening(self) -> None:
        # Not subscribed in time: polling still works, only slower.
        with contextlib.suppress(asyncio.TimeoutError):
            await self.listener.start(timeout=self.poll_interval)

    def _wake(self, name: str) -> None:
        for event in self._waiters.get(name, ()):
            event.set()


class ReleaseListener(PubSubListener):
    """Hears the lock's release channel and calls `on_release(name)` for each released lock."""

    def __init__(
        self, redis: aioredis.Redis, channel: str, *, on_release: Callable[[str], None]
    ) -> None:
        super().__init__(redis, channel, f"lock:{channel}")
        self.on_release = on_release

    async def _handle(self, data: Any) -> None:
        self.on_release(data.decode() if isinstance(data, bytes) else str(data))

    def _lost(self, exc: BaseException) -> None:
        logger.warning("lock release channel lost (%s); waiters poll", exc)
