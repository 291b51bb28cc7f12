"""TTL strategies: how long an entry lives, and why not every entry should live the same time.

- per-type TTLs from the lab's settings (a quote changes faster than an agent's monthly report);
- jitter: entries written together (a warm-up, a deploy) would otherwise expire together and
  send a burst of loads to the source at once;
- sliding expiration: a read pushes the expiry out, so what is used stays and the rest ages out;
- the L1 rule: an L1 copy never outlives its Redis entry, whatever jitter or sliding did to it.
"""

from __future__ import annotations

import random

import redis.asyncio as aioredis

from labcache import validate
from labcache.aside import ttl_ms
from labcache.connection import Settings
from labcache.validate import positive_seconds


class Jitter:
    """Spread TTLs uniformly by ±`fraction` so entries written together expire apart."""

    def __init__(self, fraction: float = 0.1, rng: random.Random | None = None) -> None:
        self.fraction = validate.fraction(fraction, "jitter fraction")
        # Unseeded by default: instances seeded alike would jitter their keys alike. Pass a
        # seeded rng where a run must repeat (tests, notebooks).
        self.rng = rng if rng is not None else random.Random()

    def __call__(self, ttl: float) -> float:
        """`ttl` seconds, moved by up to ±fraction of itself."""
        ttl = positive_seconds(ttl)
        return ttl * (1.0 + self.rng.uniform(-self.fraction, self.fraction))

    def bounds(self, ttl: float) -> tuple[float, float]:
        """The shortest and longest TTL this jitter can give `ttl`."""
        return ttl * (1.0 - self.fraction), ttl * (1.0 + self.fraction)

    def __repr__(self) -> str:
        return f"Jitter(fraction={self.fraction})"


def kind_of(key: str) -> str:
    """The data type a key names: its first segment (`policy:12345` -> `policy`)."""
    return key.partition(":")[0]


class TypeTTL:
    """Per-type TTLs from the settings (`POLICY_CACHE_TTL`, ...), optionally jittered.

    `ttls.for_key("policy:12345")` is the policy TTL; unknown types get DEFAULT_TTL.
    """

    def __init__(self, settings: Settings | None = None, jitter: Jitter | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.jitter = jitter

    def for_kind(self, kind: str) -> float:
        ttl = float(self.settings.ttl_for(kind))
        return self.jitter(ttl) if self.jitter is not None else ttl

    def for_key(self, key: str) -> float:
        return self.for_kind(kind_of(key))

    __call__ = for_key


def l1_ttl(
    memory_ttl: float,
    now: float,
    expires_at: float,
    *,
    sliding_ttl: float | None = None,
) -> float:
    """How long an L1 copy may live: never past the Redis entry's expiry (mistake 6).

    For sliding entries, at most half the TTL: only reads that reach Redis slide the expiry, so
    a key served from L1 alone would otherwise expire while in use. (Early refresh needs no
    bound: an L1 copy carries the Redis expiry and load time, and L1 hits draw too.)
    """
    bound = min(memory_ttl, expires_at - now)
    if sliding_ttl is not None:
        bound = min(bound, sliding_ttl / 2)
    return bound


# Read the record and, if it is still fresh, stamp a new expiry on it: GETEX alone cannot do
# it, since a labcache record carries its logical expiry inside the value (labcache/entry.py).
SLIDE_SCRIPT = """
local data = redis.call('GET', KEYS[1])
if not data then return false end
local expires, rest = string.match(data, '^lc:(%d+):(.*)$')
if expires and tonumber(expires) > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], 'lc:' .. ARGV[2] .. ':' .. rest, 'PX', ARGV[3])
  return 'lc:' .. ARGV[2] .. ':' .. rest
end
return data
"""


class Sliding:
    """Sliding expiration for labcache records: each read that reaches Redis renews the TTL.

    One round trip, like a GET: a Lua script reads the record and, if it has not expired,
    rewrites its expiry to `now + ttl` (Redis PX: `ttl + grace`). An expired record is
    returned unchanged, so a stale value is never renewed by being read.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(SLIDE_SCRIPT)

    async def get(
        self, full_key: str, *, now: float, ttl: float, grace: float = 0.0
    ) -> bytes | None:
        """The record under `full_key` (renewed if fresh), or None if there is none."""
        ttl = positive_seconds(ttl)
        new_expiry = round((now + ttl) * 1000)
        args = [round(now * 1000), new_expiry, ttl_ms(ttl + grace)]
        data = await self._script(keys=[full_key], args=args)
        return data if data else None
