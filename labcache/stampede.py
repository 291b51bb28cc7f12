"""Stampede (dogpile, thundering herd) prevention: when an entry is missing, load it once.

The lab's checklist ticks stampede protection; its code has none (mistake 13). Three tools:
- `SingleFlight`: concurrent calls in one process share one load;
- `DistributedLock` (in `labcache.lock`, re-exported here) with `load_with_lock`: one process
  in a fleet loads, the others wait for it and re-read Redis;
- `XFetch`: probabilistic early expiration, so a hot entry is refreshed before it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from labcache.aside import REDIS_FAILURES
from labcache.lock import RELEASE_SCRIPT, DistributedLock, LockOutcome, LockStats
from labcache.stats import Counters
from labcache.tasks import cancel_and_wait
from labcache.validate import non_negative

__all__ = [
    "MISSING",
    "RELEASE_SCRIPT",
    "DistributedLock",
    "LockOutcome",
    "LockStats",
    "SingleFlight",
    "StampedeStats",
    "XFetch",
    "load_with_lock",
    "wait_or_stale",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StampedeStats(Counters):
    """What the stampede and stale-serving protections did, since the cache was made."""

    early_refreshes: int = 0  # XFetch chose to refresh before expiry
    stale_served: int = 0  # reads answered with an expired value within its grace period
    refresh_errors: int = 0  # background refreshes that failed (the stale value kept serving)
    soft_timeouts: int = 0  # refreshes slower than the soft timeout (stale served instead)
    hard_timeouts: int = 0  # loads abandoned at the hard timeout (TimeoutError raised)
    lock_waits: int = 0  # misses that waited for another process's load
    lock_timeouts: int = 0  # waiters that gave up and loaded themselves
    lock_takeovers: int = 0  # waiters that took the lock after its holder vanished


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
