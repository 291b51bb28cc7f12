"""Cache events: every cache reports what it did, so a monitor (or a notebook) can watch it.

Emitting costs one truthiness check when nobody listens, so the L1 hit path stays cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# One of these per request: where it was served from.
HIT, MISS, STALE = "hit", "miss", "stale"
# Everything else a cache does.
LOAD, SET, INVALIDATE, EVICT, ERROR, FALLBACK = (
    "load",
    "set",
    "invalidate",
    "evict",
    "error",
    "fallback",
)
EARLY_REFRESH, LOCK_WAIT, REJECTED = "early_refresh", "lock_wait", "rejected"
L1, L2, SOURCE = "l1", "l2", "source"


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """What happened (`kind`), to which key, at which level, how long it took (seconds)."""

    kind: str
    key: str
    level: str = ""
    duration: float = 0.0
    at: float = 0.0
    detail: str = ""


Listener = Callable[[CacheEvent], None]


class EventHub:
    """A list of listeners; a failing listener is logged and never breaks the cache."""

    __slots__ = ("listeners",)

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; call the returned function to remove it again."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def report(
        self, kind: str, key: str, level: str, start: float | None = None, detail: str = ""
    ) -> None:
        """Emit an event if anyone listens; `start` is its perf_counter start (None: instant)."""
        if self.listeners:
            now = time.perf_counter()
            duration = 0.0 if start is None else now - start
            self.emit(CacheEvent(kind, key, level, duration, now, detail))

    def emit(self, event: CacheEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("cache event listener %r failed on %s", listener, event)
