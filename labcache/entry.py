"""The record a MultiLevelCache keeps in Redis: when it expires and how long it took to load.

`lc:<expires_ms>:<load_ms>:<payload>`. The expiry lets an L1 copy be bounded by the Redis entry
without a PTTL round trip (mistake 6); the load time is what probabilistic early refresh
(XFetch) needs. Anything else under our keys is foreign and is treated as a miss.
"""

from __future__ import annotations

from typing import NamedTuple

from labcache.serializers import CorruptEntry

MAGIC = b"lc:"


class Entry(NamedTuple):
    payload: bytes
    expires_at: float  # seconds on the cache's clock (wall time by default)
    load_time: float  # seconds the loader took


def encode(payload: bytes, expires_at: float, load_time: float = 0.0) -> bytes:
    return b"lc:%d:%d:" % (round(expires_at * 1000), round(load_time * 1000)) + payload


def decode(data: bytes, key: str = "") -> Entry:
    """Split a stored record; raise CorruptEntry (naming `key`) for anything that is not one."""
    if not data.startswith(MAGIC):
        raise CorruptEntry(f"foreign or corrupt data under {key!r} (no labcache header)")
    try:
        _, expires, load, payload = data.split(b":", 3)
        return Entry(payload, int(expires) / 1000, int(load) / 1000)
    except ValueError:
        raise CorruptEntry(f"corrupt labcache header under {key!r}") from None
