"""The options that carry behaviour, as objects: one per concern, given to a cache once.

- `Stampede`: how many loads one missing or expiring key may cause (single-flight, a fleet
  lock, XFetch early refresh, a hard timeout, TTL jitter); see `labcache.stampede`.
- `Staleness`: what an expired entry is still good for (grace, soft timeout, sliding TTLs).
- `Guard`: how far the cache trusts Redis (a timeout per call, a circuit breaker, strict mode,
  the largest value it stores); see `labcache.breaker`.

`MultiLevelCache(stampede=..., staleness=..., guard=...)` takes them; `get(..., stampede=...,
staleness=...)` replaces the cache's policy for one read, the way redis-py takes `retry=Retry()`.
All are frozen: a policy is a value, shared freely between caches and reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from labcache.breaker import DEFAULT_OP_TIMEOUT, CircuitBreaker
from labcache.stampede import XFetch
from labcache.ttl import Jitter
from labcache.validate import non_negative, optional_whole, positive_seconds, seconds

if TYPE_CHECKING:
    from labcache.stampede import DistributedLock


@dataclass(frozen=True)
class Stampede:
    """Stampede protection (mistake 13).

    `single_flight`: concurrent misses of a key in this process share one load.
    `lock`: a DistributedLock, so that one process of a fleet loads a miss (the cache closes it).
    `early_refresh`: the XFetch beta (None: off): a hot key is refreshed in the background
    shortly before it expires, sooner for slow loads; `rng` its random source (default
    unseeded, so instances draw independently; seed it only to repeat a run).
    `hard_timeout`: how long a read with nothing stale to serve waits for a load (then
    `labcache.errors.LoadTimeout`). `jitter`: spreads every TTL the cache writes, so keys written
    together (a warm-up) do not expire together.
    """

    single_flight: bool = True
    lock: DistributedLock | None = None
    early_refresh: float | None = None
    hard_timeout: float | None = None
    jitter: Jitter | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    xfetch: XFetch = field(init=False, compare=False, repr=False)  # draws with this beta and rng

    def __post_init__(self) -> None:
        beta = (
            0.0 if self.early_refresh is None else non_negative(self.early_refresh, "early_refresh")
        )
        object.__setattr__(self, "xfetch", XFetch(beta, self.rng))
        if self.hard_timeout is not None:
            positive_seconds(self.hard_timeout, "hard_timeout")
        if self.jitter is not None and not isinstance(self.jitter, Jitter):
            raise TypeError(f"jitter must be a labcache.ttl.Jitter, not {self.jitter!r}")

    def ttl(self, ttl: float) -> float:
        """The TTL to write: `ttl`, jittered if this policy jitters."""
        return ttl if self.jitter is None else self.jitter(ttl)


@dataclass(frozen=True)
class Staleness:
    """What an expired entry is still good for.

    `grace`: seconds Redis keeps an entry past its expiry; a read then serves it (STALE) while
    one background refresh runs, and keeps serving it if the loader fails (fail-safe).
    `soft_timeout`: how long such a read first waits for the refresh. `sliding`: each read that
    reaches Redis renews the TTL (an L1 copy then lives at most half of it).
    """

    grace: float = 0.0
    soft_timeout: float = 0.0
    sliding: bool = False

    def __post_init__(self) -> None:
        seconds(self.grace, "grace")
        seconds(self.soft_timeout, "soft_timeout")
        if not isinstance(self.sliding, bool):
            raise ValueError(f"sliding must be True or False, not {self.sliding!r}")


@dataclass(frozen=True)
class Guard:
    """How far a cache trusts Redis.

    `op_timeout`: seconds any one Redis call may take (None: the client's own timeout).
    `breaker`: True for a CircuitBreaker of this cache's own, False for none, or one to share
    between caches on the same Redis. `strict`: Redis errors reach the caller instead of
    falling back to the loader. `max_value_bytes`: the largest serialised value stored; larger
    ones are served, not cached.
    """

    op_timeout: float | None = DEFAULT_OP_TIMEOUT
    breaker: CircuitBreaker | bool = True
    strict: bool = False
    max_value_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.op_timeout is not None:
            positive_seconds(self.op_timeout, "op_timeout")
        optional_whole(self.max_value_bytes, "max_value_bytes")
        if not isinstance(self.breaker, (bool, CircuitBreaker)):
            raise TypeError(f"breaker must be a CircuitBreaker or a bool, not {self.breaker!r}")


P = TypeVar("P")


def policy(given: P | None, kind: type[P], name: str, *, default: P | None = None, **new: Any) -> P:
    """`given` if it is a `kind`; `default` (or a new `kind`) if None; else a TypeError."""
    if given is None:
        return default if default is not None else kind(**new)
    if not isinstance(given, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, not {given!r}")
    return given
