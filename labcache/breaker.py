"""A circuit breaker for Redis: after a run of failures, stop asking a server that is not there.

Without one, every request pays for Redis failing (a refused connect, a timeout) before the cache
falls back to its loader. With one, the cache learns after `failure_threshold` failures in a row
and then skips Redis at once, serving L1 and the loader, until one probe says Redis is back:

    closed --N failures in a row--> open --reset_timeout--> half-open --probe ok--> closed
                                      ^                        |
                                      +------probe failed------+

Only an outage counts (a connection error or a timeout). A reply that is an error (WRONGTYPE,
NOPERM) proves the server is up, so it counts as a success.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from labcache.errors import LabcacheError
from labcache.stats import Counters
from labcache.validate import seconds, whole

if sys.version_info < (3, 11):  # redis-py depends on async-timeout below 3.11.3
    from async_timeout import timeout as _timeout  # type: ignore[import-not-found,unused-ignore]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Cache event kinds for the transitions (a cache emits them on its EventHub).
BREAKER_OPEN, BREAKER_HALF_OPEN, BREAKER_CLOSED = (
    "breaker_open",
    "breaker_half_open",
    "breaker_closed",
)
_EVENT = {OPEN: BREAKER_OPEN, HALF_OPEN: BREAKER_HALF_OPEN, CLOSED: BREAKER_CLOSED}

# The caches' default `op_timeout` (seconds). Generous on purpose: a timeout on a healthy but
# busy Redis costs a source call (and five in a row open the breaker). A burst of 100 reads on
# a cold connection pool took up to 0.94 s on a loaded 2-core test machine; lower it where
# latency budgets are tight and the network is quiet.
DEFAULT_OP_TIMEOUT = 2.0

# What an unreachable or too-slow Redis raises through redis.asyncio (and our own timeout).
OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
)


class CircuitOpen(LabcacheError, RedisConnectionError):
    """Raised instead of calling Redis while the breaker is open (nothing was sent)."""


class OperationTimeout(LabcacheError, RedisTimeoutError):
    """A Redis call took longer than the caller's operation timeout and was abandoned."""


@dataclass
class BreakerStats(Counters):
    """Calls and transitions since the breaker was made."""

    successes: int = 0
    failures: int = 0
    rejected: int = 0  # calls answered with CircuitOpen, without touching Redis
    timeouts: int = 0
    opened: int = 0
    half_opened: int = 0
    closed: int = 0  # recoveries: half-open -> closed


Listener = Callable[[str, str], None]  # (event kind, reason)


class CircuitBreaker:
    """Closed, open after `failure_threshold` outages in a row, half-open after `reset_timeout`."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = whole(failure_threshold, "failure_threshold")
        self.reset_timeout = seconds(reset_timeout, "reset_timeout")
        self.clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self.stats = BreakerStats()
        self._probing = False
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state!r}, failures={self.consecutive_failures}/"
            f"{self.failure_threshold}, reset_timeout={self.reset_timeout:g})"
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(kind, reason)` on every transition; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @property
    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.reset_timeout - self.clock())

    def allow(self) -> bool:
        """May a call go to Redis now? In half-open, only one call (the probe) at a time."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.reset_timeout:
                self.stats.rejected += 1
                return False
            self._change(HALF_OPEN, f"{self.reset_timeout:g}s passed: probing Redis")
        if self._probing:
            self.stats.rejected += 1
            return False
        self._probing = True
        return True

    def success(self) -> None:
        """Redis answered: reset the count; a successful probe closes the breaker."""
        self.stats.successes += 1
        self.consecutive_failures = 0
        if self.state == HALF_OPEN:
            self._probing = False
            self._change(CLOSED, "probe succeeded: Redis is back")

    def failure(self, exc: BaseException) -> None:
        """Redis did not answer: count it; open on the N-th in a row, or on a failed probe."""
        self.stats.failures += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.state == HALF_OPEN:
            self._probing = False
            self._open(f"probe failed ({self.last_error})")
        elif self.state == CLOSED and self.consecutive_failures >= self.failure_threshold:
            self._open(f"{self.consecutive_failures} failures in a row ({self.last_error})")

    def release(self) -> None:
        """A call ended without telling us anything (cancelled): let the next one probe."""
        if self.state == HALF_OPEN:
            self._probing = False

    def reset(self) -> None:
        """Close the breaker by hand (e.g. after fixing the server)."""
        self.consecutive_failures = 0
        self._probing = False
        if self.state != CLOSED:
            self._change(CLOSED, "reset by hand")

    async def call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Await a Redis call through the breaker, abandoning it after `timeout` seconds.

        Raises CircuitOpen (closing the unawaited coroutine) while open, OperationTimeout when
        the timeout fires, and whatever the call raised otherwise.
        """
        if not self.allow():
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            raise CircuitOpen(self._why_open())
        try:
            result = await (awaitable if timeout is None else within(awaitable, timeout))
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if timeout is None:  # not ours: a timeout raised by the call itself
                self.failure(exc)
                raise
            self.stats.timeouts += 1
            late = OperationTimeout(f"Redis did not answer within {timeout:g}s (op_timeout)")
            self.failure(late)
            raise late from None
        except OUTAGES as exc:
            self.failure(exc)
            raise
        except ResponseError:
            self.success()  # an error reply: the server is up
            raise
        except BaseException:
            self.release()
            raise
        self.success()
        return result

    def _why_open(self) -> str:
        if self.state == HALF_OPEN:
            return f"Redis circuit half-open: a probe is in flight (last error: {self.last_error})"
        return (
            f"Redis circuit open after {self.consecutive_failures} failures in a row "
            f"({self.last_error}); next probe in {self.retry_in:.2f}s"
        )

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self._change(OPEN, reason)

    def _change(self, state: str, reason: str) -> None:
        self.state = state
        if state == OPEN:
            self.stats.opened += 1
            logger.warning("Redis circuit breaker open: %s", reason)
        elif state == HALF_OPEN:
            self.stats.half_opened += 1
            logger.info("Redis circuit breaker half-open: %s", reason)
        else:
            self.stats.closed += 1
            logger.info("Redis circuit breaker closed: %s", reason)
        for listener in list(self._listeners):
            try:
                listener(_EVENT[state], reason)
            except Exception:
                logger.exception("circuit breaker listener %r failed", listener)


def coerce(breaker: CircuitBreaker | bool, *, cluster: bool = False) -> CircuitBreaker | None:
    """A cache's `breaker=`: True for a default breaker, False for none, or one to share.

    On a Redis Cluster True means none: one breaker for every node would stop them all when
    one primary fails (redis-py's cluster client reroutes on its own; pass one to insist).
    """
    if breaker is True:
        return None if cluster else CircuitBreaker()
    if breaker is False or breaker is None:
        return None
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"breaker must be a CircuitBreaker or a bool, not {breaker!r}")
    return breaker


async def guarded(
    breaker: CircuitBreaker | None, awaitable: Awaitable[T], timeout: float | None
) -> T:
    """`breaker.call(awaitable, timeout)`, or only the timeout when there is no breaker."""
    if breaker is not None:
        return await breaker.call(awaitable, timeout)
    if timeout is None:
        return await awaitable
    try:
        return await within(awaitable, timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise OperationTimeout(f"Redis did not answer within {timeout:g}s (op_timeout)") from None


class _Expiry:
    """The timer's callback: cancels the task, remembering that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """`await awaitable`, abandoned with TimeoutError after `timeout` seconds.

    asyncio.timeout's rules (a cancellation from elsewhere stays a cancellation) with one timer
    and no context manager: on a cache-aside hit asyncio.timeout took 4.5 of 7.6 µs of Python.
    """
    if sys.version_info < (3, 11):
        async with _timeout(timeout):
            return await awaitable
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None, "within() runs inside a task"
    expiry = _Expiry(task)
    cancelling = task.cancelling()
    timer = loop.call_at(loop.time() + timeout, expiry)
    try:
        result = await awaitable
    except asyncio.CancelledError:
        if expiry.fired and task.uncancel() <= cancelling:
            raise TimeoutError from None  # ours: the deadline passed
        raise
    except BaseException:
        if expiry.fired:
            task.uncancel()  # the call turned our cancellation into an error: balance it
        raise
    finally:
        timer.cancel()
    if expiry.fired:
        task.uncancel()  # the call swallowed our cancellation: balance it, as asyncio does
    return result
