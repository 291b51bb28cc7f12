"""Stampede (dogpile, thundering herd) prevention: when an entry is missing, load it once.

The lab's checklist ticks stampede protection; its code has none (mistake 13). Three tools:
- `SingleFlight`: concurrent calls in one process share one load;
- `DistributedLock`: one process in a fleet loads, the others wait for it and re-read Redis;
- `XFetch`: probabilistic early expiration, so a hot entry is refreshed before it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, TypeVar

import redis.asyncio as aioredis

from labcache.aside import REDIS_FAILURES, ttl_ms
from labcache.tasks import cancel_and_wait
from labcache.validate import non_negative, positive_seconds, seconds

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StampedeStats:
    """What the stampede and stale-serving protections did, since the cache was made."""

    early_refreshes: int = 0  # XFetch chose to refresh before expiry
    stale_served: int = 0  # reads answered with an expired value within its grace period
    refresh_errors: int = 0  # background refreshes that failed (the stale value kept serving)
    soft_timeouts: int = 0  # refreshes slower than the soft timeout (stale served instead)
    hard_timeouts: int = 0  # loads abandoned at the hard timeout (TimeoutError raised)
    lock_waits: int = 0  # misses that waited for another process's load
    lock_timeouts: int = 0  # waiters that gave up and loaded themselves
    lock_takeovers: int = 0  # waiters that took the lock after its holder vanished

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SingleFlight:
    """Concurrent calls for one key share one run of the function (in one process).

    The run is its own task, so a caller that is cancelled does not cancel it for the others;
    its result or exception reaches every caller; the key is forgotten when the run ends.
    """

    def __init__(self) -> None:
        self._runs: dict[str, asyncio.Future[Any]] = {}
        self._waiting: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def waiting(self, key: str) -> int:
        """How many callers are waiting on the run for `key` right now."""
        return self._waiting.get(key, 0)

    def pending(self, key: str) -> asyncio.Future[Any] | None:
        """The run in flight for `key`, if any."""
        return self._runs.get(key)

    def start(self, key: str, fn: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Join the run for `key` or start one, without waiting for it (a background refresh)."""
        run = self._runs.get(key)
        if run is None:
            run = asyncio.ensure_future(fn())
            self._runs[key] = run
            run.add_done_callback(lambda done: self._forget(key, done))
        return run

    async def run(
        self, key: str, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None
    ) -> tuple[T, bool]:
        """Return `(result, shared)`; `shared` is True when this call joined a run in flight.

        With `timeout`, this caller gives up after that many seconds (asyncio.TimeoutError);
        the run itself goes on for the others and still stores its result.
        """
        shared = key in self._runs
        self.start(key, fn)
        result: T = await self.follow(key, timeout=timeout)
        return result, shared

    async def follow(self, key: str, *, timeout: float | None = None) -> Any:
        """Wait for the run in flight for `key` (KeyError if none), counted in `waiting`."""
        run = self._runs[key]
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            if timeout is None:
                return await asyncio.shield(run)
            return await asyncio.wait_for(asyncio.shield(run), timeout)
        finally:
            left = self._waiting.pop(key) - 1
            if left:
                self._waiting[key] = left

    async def join(self) -> None:
        """Wait until nothing is in flight (tests and demos await background refreshes so)."""
        while self._runs:
            await asyncio.wait(list(self._runs.values()))

    async def cancel(self) -> None:
        """Cancel every run in flight and wait for them to end (on close: mistake 10)."""
        await cancel_and_wait(list(self._runs.values()))

    def _forget(self, key: str, done: asyncio.Future[Any]) -> None:
        if self._runs.get(key) is done:
            del self._runs[key]
        if not done.cancelled():
            done.exception()  # marks it retrieved even if every caller was cancelled


class XFetch:
    """Probabilistic early expiration (Vattani, Chierichetti & Lowenstein, VLDB 2015).

    A read refreshes early when `now - delta * beta * ln(rand()) >= expiry`, where `delta` is
    how long the last load took. The chance rises as expiry nears, and sooner for slow loads,
    so one reader refreshes ahead of the crowd instead of all of them missing at expiry.
    `beta` > 1 refreshes earlier, < 1 later, 0 never.
    """

    def __init__(self, beta: float = 1.0, rng: random.Random | None = None) -> None:
        self.beta = non_negative(beta, "beta")
        # Unseeded by default: a fleet of instances seeded alike makes the same draws at the same
        # moments and refreshes together, the stampede XFetch exists to prevent. Seed a run
        # that must repeat (tests, notebooks) by passing `rng`.
        self.rng = rng if rng is not None else random.Random()

    def refresh_at(self, expires_at: float, delta: float, beta: float | None = None) -> float:
        """One reader's draw: the instant from which it refreshes (never after `expires_at`)."""
        beta = self.beta if beta is None else beta
        if beta <= 0 or delta <= 0:
            return expires_at
        rand = 1.0 - self.rng.random()  # in (0, 1]: ln is finite and <= 0
        return expires_at + delta * beta * math.log(rand)

    def should_refresh(
        self, now: float, expires_at: float, delta: float, beta: float | None = None
    ) -> bool:
        return now >= self.refresh_at(expires_at, delta, beta)


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
class LockStats:
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
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl = positive_seconds(ttl, "lock ttl")
        self.wait_timeout = seconds(wait_timeout, "wait_timeout")
        self.poll_interval = positive_seconds(poll_interval, "poll_interval")
        self.ttl_factor = positive_seconds(ttl_factor, "ttl_factor")
        self.min_ttl = positive_seconds(min_ttl, "min_ttl")
        self.channel = f"{namespace}__lock_released__"
        self.stats = LockStats()
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

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
        if await self.redis.set(self.key(name), token, nx=True, px=px):
            self.stats.acquired += 1
            return token
        return None

    async def release(self, name: str, token: str) -> bool:
        """Delete the lock if it is still ours and wake its waiters; False if it was not."""
        released = bool(
            await self._release(keys=[self.key(name)], args=[token, self.channel, name])
        )
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
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _ensure_listening(self) -> None:
        if self._task is None or self._task.done():
            self._subscribed.clear()
            self._task = asyncio.create_task(self._listen(), name=f"lock:{self.channel}")
        # Not subscribed in time: polling still works, only slower.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self.poll_interval)

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        backoff = 0.05
                    elif message["type"] == "message":
                        self._wake(message["data"])
            except REDIS_FAILURES as exc:
                self._subscribed.clear()
                logger.warning("lock release channel lost (%s); waiters poll", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, raw: bytes | str) -> None:
        name = raw.decode() if isinstance(raw, bytes) else raw
        for event in self._waiters.get(name, ()):
            event.set()


# What `reread` returns when Redis holds nothing usable for the key.
MISSING: Any = object()


async def load_with_lock(
    lock: DistributedLock,
    name: str,
    load: Callable[[], Awaitable[T]],
    reread: Callable[[], Awaitable[Any]],
    *,
    ttl: float | None = None,
    stats: StampedeStats | None = None,
    on_wait: Callable[[str, float], None] | None = None,
) -> tuple[T, bool]:
    """Load under `lock`, or wait for its holder and `reread` what it stored: `(value, loaded)`.

    After taking the lock it re-reads first (another holder may have stored the value a
    moment before). A waiter that times out loads by itself (counted in `stats`), so a stuck
    holder delays the others by at most `lock.wait_timeout`. If Redis fails, it loads.
    """
    stats = stats if stats is not None else StampedeStats()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock.wait_timeout
    while True:
        began = loop.time()
        try:
            got = await lock.acquire_or_wait(name, ttl=ttl, timeout=max(0.0, deadline - began))
        except REDIS_FAILURES as exc:
            logger.warning(
                "lock for %r unusable (%s: %s); loading without it", name, type(exc).__name__, exc
            )
            return await load(), True
        if got.waited:
            stats.lock_waits += 1
            how = "timed out" if got.timed_out else "took over" if got.token else "released"
            stats.lock_timeouts += got.timed_out
            stats.lock_takeovers += got.token is not None
            if on_wait is not None:
                on_wait(how, loop.time() - began)
        if got.token is not None:
            try:
                found = await reread()
                return (found, False) if found is not MISSING else (await load(), True)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await lock.release(name, got.token)
        if got.timed_out:
            return await load(), True
        found = await reread()
        if found is not MISSING:
            return found, False
        # Released with nothing stored (the holder's load failed): try to be the next holder.


async def wait_or_stale(run: asyncio.Future[T], soft_timeout: float) -> tuple[bool, Any, str]:
    """Wait up to `soft_timeout` for a refresh: `(True, value, "")`, else `(False, None, why)`."""
    if soft_timeout <= 0 and not run.done():
        return False, None, "revalidating"
    try:
        value = await asyncio.wait_for(asyncio.shield(run), max(soft_timeout, 0.0))
    except asyncio.TimeoutError:
        return False, None, "soft timeout"
    except Exception as exc:
        return False, None, f"refresh failed: {type(exc).__name__}"
    return True, value, ""
