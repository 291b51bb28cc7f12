"""Part 4: invalidation. Events say what changed; rules say which cache entries that makes wrong.

What the lab's invalidator got wrong, and this module does not:
- pattern walks use SCAN + UNLINK one page at a time, never KEYS, which blocks the server
  (mistake 2); user input inside a pattern is escaped with `glob_escape`;
- related data is dropped by tag, not by a `customer:*` pattern that wipes every customer
  (mistake 16);
- the expiring-quote cleanup only touches keys whose TTL is positive and under the threshold:
  TTL -1 (no expiry) and -2 (gone) are not "expiring" (mistake 12);
- the cleanup task has `stop()` and an `async with`, so it never outlives its cell (mistake 10);
- a failing rule is logged and reported, never swallowed, and never stops the other rules;
- `emit` is awaited and returns what it dropped: no "sleep 100 ms and hope".
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis

from labcache.aside import REDIS_FAILURES
from labcache.cluster import scan_pages
from labcache.errors import LabcacheError
from labcache.keys import glob_escape, glob_to_regex, validate_key
from labcache.tasks import cancel_and_wait
from labcache.validate import positive_seconds, whole

logger = logging.getLogger(__name__)


class Invalidates(Protocol):
    """What the quote cleanup needs from a cache (MultiLevelCache and CacheAside have it)."""

    redis: aioredis.Redis
    namespace: str

    async def invalidate(self, *keys: str) -> int: ...


class SupportsInvalidation(Invalidates, Protocol):
    """What an Invalidator needs from a cache: keys, patterns and tags (MultiLevelCache)."""

    async def invalidate_pattern(self, pattern: str, *, count: int = 1000) -> int: ...

    async def invalidate_tag(self, tag: str) -> list[str]: ...


class InvalidationRefused(LabcacheError, ValueError):
    """A bulk or namespace-wide invalidation was asked for without the confirmation it needs."""


@dataclass
class Targets:
    """What a rule says to drop: exact keys, tags (precise), glob patterns (a keyspace walk)."""

    keys: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)

    def __or__(self, other: Targets) -> Targets:
        def merged(a: list[str], b: list[str]) -> list[str]:
            return list(dict.fromkeys([*a, *b]))

        return Targets(
            merged(self.keys, other.keys),
            merged(self.tags, other.tags),
            merged(self.patterns, other.patterns),
        )


Rule = Callable[..., Targets | Awaitable[Targets | None] | None]


@dataclass
class Failure:
    """One step that failed: a rule (`rule policy.updated:fn`), `keys`, `tag t` or `pattern p`."""

    step: str
    error: str
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass
class InvalidationReport:
    """What one event (or cascade, or bulk) asked to drop, what it dropped, and what failed.

    `counts` is keys removed per kind of target, in the order they run: `tags` (members of the
    tag sets, one that had already expired included), then `keys` (that still existed), then
    `patterns` (found by SCAN): so no key is counted twice.
    """

    event: str
    payload: dict[str, Any]
    keys: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"keys": 0, "tags": 0, "patterns": 0})
    tag_members: dict[str, list[str]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def removed(self) -> int:
        return sum(self.counts.values())


def matches_everything(pattern: str) -> bool:
    """True when a glob matches every key (of at least a few bytes): `*`, `**`, `?*`, `*?*`..."""
    body = glob_to_regex(pattern).pattern.removesuffix(rb"\Z")
    # glob_to_regex turns `*` into `.*` and `?` (or `[^]`) into `.`; literals come out escaped.
    return b".*" in body and re.fullmatch(rb"(?:\.\*|\.)+", body) is not None


class Invalidator:
    """Turns domain events into cache invalidations, by rules registered in code."""

    def __init__(
        self,
        cache: SupportsInvalidation,
        *,
        rules: Mapping[str, Rule] | None = None,
        scan_count: int = 1000,
    ) -> None:
        whole(scan_count, "scan_count")
        self.cache = cache
        self.scan_count = scan_count
        self.rules: dict[str, list[Rule]] = {}
        for event, fn in (rules or {}).items():  # e.g. the lab's: labcache.lab.rules.LAB_RULES
            self.add_rule(event, fn)

    @property
    def events(self) -> list[str]:
        return sorted(self.rules)

    def add_rule(self, event: str, fn: Rule) -> Rule:
        """Run `fn(**payload)` on every `event`; it returns Targets (or None), maybe awaitably."""
        if not isinstance(event, str) or not event:
            raise ValueError(f"an event name must be a non-empty str, not {event!r}")
        if not callable(fn):
            raise TypeError(f"a rule must be callable, not {fn!r}")
        self.rules.setdefault(event, []).append(fn)
        return fn

    def rule(self, event: str) -> Callable[[Rule], Rule]:
        """Decorator form of add_rule: `@invalidator.rule("policy.updated")`."""
        return lambda fn: self.add_rule(event, fn)

    async def emit(self, event: str, /, **payload: Any) -> InvalidationReport:
        """Run every rule for `event`, drop the union of their targets, report what happened."""
        rules = self.rules.get(event)
        if not rules:
            raise ValueError(f"no invalidation rule for event {event!r}; known: {self.events}")
        targets, failures = Targets(), []
        for fn in rules:
            step = f"rule {event}:{getattr(fn, '__qualname__', repr(fn))}"
            try:
                result = fn(**payload)
                if inspect.isawaitable(result):
                    result = await result
                if result is not None and not isinstance(result, Targets):
                    raise TypeError(f"returned {type(result).__name__}, not Targets or None")
            except Exception as exc:
                logger.exception("invalidation %s failed on %r", step, payload)
                failures.append(Failure(step, f"{type(exc).__name__}: {exc}", exc))
                continue
            if result is not None:
                targets |= result
        report = await self._drop(event, payload, targets)
        report.failures[:0] = failures
        return report

    async def cascade(
        self,
        primary_key: str,
        *,
        keys: Iterable[str] = (),
        tags: Iterable[str] = (),
        patterns: Iterable[str] = (),
    ) -> InvalidationReport:
        """Drop a key and what depends on it; prefer `tags` to `patterns` (mistake 16)."""
        patterns = list(patterns)
        self._refuse_everything(patterns, confirm=False)
        keys = [validate_key(k) for k in dict.fromkeys([primary_key, *keys])]
        targets = Targets(keys, list(tags), patterns)
        return await self._drop("cascade", {"primary_key": primary_key}, targets)

    async def bulk(
        self,
        patterns: str | Iterable[str],
        *,
        confirm: bool | Literal["everything"] = False,
    ) -> InvalidationReport:
        """Drop every key matching the patterns; refuses unless `confirm=True`, and refuses a
        namespace-wide pattern such as `*` unless `confirm="everything"`."""
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not patterns:
            raise ValueError("bulk invalidation needs at least one pattern")
        if confirm is not True and confirm != "everything":
            raise InvalidationRefused(
                f"bulk invalidation of {patterns} refused: it drops every matching key in Redis "
                "and in every instance's L1. Call bulk(..., confirm=True) to go ahead."
            )
        self._refuse_everything(patterns, confirm=confirm == "everything")
        targets = Targets(patterns=patterns)
        return await self._drop("bulk", {"patterns": patterns}, targets, allow_everything=True)

    # -- internals ---------------------------------------------------------------------------

    def _refuse_everything(self, patterns: list[str], *, confirm: bool) -> None:
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"an invalidation pattern must be a non-empty str: {pattern!r}")
            if not confirm and matches_everything(pattern):
                raise InvalidationRefused(
                    f"pattern {pattern!r} matches every key in namespace "
                    f"{self.cache.namespace!r}: refusing to wipe the whole cache. If that is "
                    "really what you want, call bulk([...], confirm='everything')."
                )

    async def _drop(
        self, event: str, payload: dict[str, Any], t: Targets, *, allow_everything: bool = False
    ) -> InvalidationReport:
        """Drop tags, then keys, then patterns; a failing step is reported, the rest still run."""
        report = InvalidationReport(event, payload, t.keys, t.tags, t.patterns)

        def failed(step: str, exc: Exception) -> None:
            error = f"{type(exc).__name__}: {exc}"
            logger.error("invalidation %s failed for %s: %s", step, event, error)
            report.failures.append(Failure(step, error, exc))

        for tag in t.tags:
            try:
                members = await self.cache.invalidate_tag(tag)
            except Exception as exc:
                failed(f"tag {tag}", exc)
                continue
            report.tag_members[tag] = members
            report.counts["tags"] += len(members)
        if t.keys:
            try:
                report.counts["keys"] += await self.cache.invalidate(*t.keys)
            except Exception as exc:
                failed("keys", exc)
        for pattern in t.patterns:
            try:
                self._refuse_everything([pattern], confirm=allow_everything)
                removed = await self.cache.invalidate_pattern(pattern, count=self.scan_count)
            except Exception as exc:
                failed(f"pattern {pattern}", exc)
                continue
            report.counts["patterns"] += removed
        logger.info("%s %s dropped %d keys", event, payload, report.removed)
        return report


def expiring_soon(pttl_ms: int, threshold: float) -> bool:
    """True for a PTTL that is positive and under `threshold` seconds.

    PTTL answers -1 for a key without expiry and -2 for a key that is gone (it expired or was
    deleted between SCAN and PTTL): neither is "expiring soon" (mistake 12).
    """
    return 0 < pttl_ms < threshold * 1000


class QuoteCleanup:
    """Drops quotes that are about to expire (0 < TTL < threshold), in a cancellable task."""

    def __init__(
        self,
        cache: Invalidates,
        *,
        threshold: float = 60,
        interval: float = 60,
        pattern: str = "quote:*",
        count: int = 1000,
    ) -> None:
        whole(count, "count")
        self.cache = cache
        self.threshold = positive_seconds(threshold, "threshold")
        self.interval = positive_seconds(interval, "interval")
        self.pattern = pattern
        self.count = count
        self.runs = 0  # completed passes, failed ones included
        self.errors = 0
        self.removed = 0
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> list[str]:
        """One pass: SCAN a page, PTTL its keys in one pipeline, drop the expiring; return them."""
        ns, redis = self.cache.namespace, self.cache.redis
        removed: list[str] = []
        async for page in scan_pages(redis, glob_escape(ns) + self.pattern, count=self.count):
            names = (k if isinstance(k, str) else k.decode() for k in page)
            keys = [k for k in names if not k.startswith(f"{ns}__")]  # skip tag sets
            if keys:
                async with redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.pttl(key)
                    ttls = await pipe.execute()
                pairs = zip(keys, ttls, strict=True)
                expiring = [k[len(ns) :] for k, t in pairs if expiring_soon(t, self.threshold)]
                if expiring:
                    # A key rewritten since its PTTL is dropped too: one extra miss, never wrong.
                    await self.cache.invalidate(*expiring)
                    removed.extend(expiring)
        self.removed += len(removed)
        if removed:
            logger.info("quote cleanup removed %d expiring keys", len(removed))
        return removed

    def start(self) -> QuoteCleanup:
        """Run a pass every `interval` seconds in the background until stop()."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="quote-cleanup")
        return self

    async def stop(self) -> None:
        """Cancel the task and wait for it to finish."""
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def wait_runs(self, n: int, timeout: float = 5.0) -> None:
        """Wait until `n` passes have completed (for tests and demos, instead of sleeping)."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(lambda: self.runs >= n), timeout)

    async def __aenter__(self) -> QuoteCleanup:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except REDIS_FAILURES as exc:  # Redis down: log, try again next interval
                self.errors += 1
                logger.warning("quote cleanup failed: %s: %s", type(exc).__name__, exc)
            except Exception:
                self.errors += 1
                logger.exception("quote cleanup failed")
            async with self._progress:
                self.runs += 1
                self._progress.notify_all()
            await asyncio.sleep(self.interval)
