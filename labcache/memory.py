"""L1: a bounded in-process memory in front of Redis.

Least-recently-*used* eviction and an expiry per entry, never serving an expired one (the lab's
"LRU" was FIFO and kept expired items: mistake 3). Keys are the full Redis keys, so an
invalidation that names a Redis key finds its L1 copy. Bounded by a count, or by bytes
(`maxbytes`, each entry's size being its Redis record's).

Why not cachetools' `TLRUCache`, which has the same rules: its read path is five Python calls
(~320 ns here), most of an L1 hit. This one is an `OrderedDict` (C) read, one clock call and a
`move_to_end`; expired entries are dropped when read, and before anything is evicted for room
(a heap of expiry times finds them), so an expired entry never pushes out a live one.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, NamedTuple

from labcache.keys import glob_to_regex
from labcache.validate import optional_whole, positive_seconds, whole


class L1Entry(NamedTuple):
    """What L1 keeps per key; `early` is what an XFetch draw on an L1 hit needs."""

    value: Any
    expires_at: float  # when this L1 copy expires (the cache clock)
    size: int  # bytes, for a byte-bounded L1
    # (Redis expiry, load time, the Stampede policy) while early refresh is on; else None.
    early: tuple[float, float, Any] | None = None


class Memory(MutableMapping[str, L1Entry]):
    """L1: at most `maxsize` entries (or `maxbytes` bytes), each kept at most `ttl` seconds.

    `clock` is the cache's clock (wall seconds): give a cache and its Memory the same one.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        *,
        maxbytes: int | None = None,
        ttl: float = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = positive_seconds(ttl, "memory_ttl")
        self.bounded_by_bytes = optional_whole(maxbytes, "maxbytes") is not None
        self.maxsize = maxbytes if maxbytes is not None else whole(maxsize, "l1 maxsize")
        self.currsize = 0
        self.clock = clock
        self._items: OrderedDict[str, L1Entry] = OrderedDict()  # least recently used first
        self._expiries: list[tuple[float, str]] = []  # a heap; entries replaced since are stale

    # -- the hot path -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> L1Entry:
        item = self._items[key]  # KeyError: not here
        if self.clock() < item.expires_at:
            self._items.move_to_end(key)
            return item
        self._remove(key)
        raise KeyError(key)

    # -- writing ------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: Any,
        ttl: float,
        size: int = 0,
        early: tuple[float, float, Any] | None = None,
    ) -> None:
        """Keep `value` for `ttl` seconds (nothing if `ttl` <= 0; a value larger than the whole
        byte budget is served by the caller, not kept).
        """
        if ttl > 0:
            self[key] = L1Entry(value, self.clock() + ttl, size, early)

    def __setitem__(self, key: str, item: L1Entry) -> None:
        self.pop(key, None)
        cost = self._cost(item)
        if cost > self.maxsize:
            return
        now = self.clock()
        if item.expires_at <= now:
            return
        while self._items and self.currsize + cost > self.maxsize:
            self._make_room(now)
        self._items[key] = item
        self.currsize += cost
        heapq.heappush(self._expiries, (item.expires_at, key))
        if len(self._expiries) > 2 * len(self._items) + 64:  # drop stale heap entries
            self._expiries = [(i.expires_at, k) for k, i in self._items.items()]
            heapq.heapify(self._expiries)

    def __delitem__(self, key: str) -> None:
        self._remove(key)

    def clear(self) -> None:
        self._items.clear()
        self._expiries.clear()
        self.currsize = 0

    # -- reading without touching -------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        item = self._items.get(key)  # type: ignore[call-overload]
        return item is not None and self.clock() < item.expires_at

    def __iter__(self) -> Iterator[str]:
        now = self.clock()
        return iter([k for k, item in self._items.items() if now < item.expires_at])

    def __len__(self) -> int:
        return len(self._items)

    def value(self, key: str, default: Any = None) -> Any:
        """The value kept for `key` (unexpired), or `default`."""
        item = self.get(key)
        return default if item is None else item.value

    # -- invalidation -------------------------------------------------------------------------

    def evict(self, keys: Iterable[str]) -> list[str]:
        """Drop these keys; return the ones that were here."""
        return [k for k in keys if self._items.get(k) is not None and self._remove(k)]

    def matching(self, pattern: str) -> list[str]:
        """The keys here that match a Redis glob (matched exactly as Redis matches it)."""
        regex = glob_to_regex(pattern)
        return [k for k in list(self._items) if regex.match(k.encode())]

    def resized(self, maxsize: int | None = None, maxbytes: int | None = None) -> Memory:
        """An empty Memory like this one with another bound (a notebook knob)."""
        return Memory(maxsize or 1000, maxbytes=maxbytes, ttl=self.ttl, clock=self.clock)

    # -- internals ----------------------------------------------------------------------------

    def _cost(self, item: L1Entry) -> int:
        return item.size if self.bounded_by_bytes else 1

    def _remove(self, key: str) -> bool:
        item = self._items.pop(key)
        self.currsize -= self._cost(item)
        return True

    def _make_room(self, now: float) -> None:
        """Drop every expired entry; if none was, the least recently used one."""
        dropped = False
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiries)
            item = self._items.get(key)
            if item is not None and item.expires_at == expires_at:
                self._remove(key)
                dropped = True
        if not dropped:
            self._remove(next(iter(self._items)))
