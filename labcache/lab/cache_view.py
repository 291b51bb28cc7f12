"""What a notebook shows about an invalidation: what is cached where, and what the server got.

Notebook 04 calls these in one line each: `snapshot(cache)` before and after an event,
`before_after(...)` to put the snapshots side by side with each key's tags, `describe(report)`
to print an `InvalidationReport`, and `commands(client, action)` to count the commands Redis
received while `action` ran.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import redis.asyncio as aioredis

from labcache.invalidation import InvalidationReport
from labcache.keys import glob_escape
from labcache.multilevel import MultiLevelCache

T = TypeVar("T")

DROPPED = "— dropped"
HIDDEN = ("__", "bench:")  # the cache's own bookkeeping keys, and notebook 04's benchmark


async def snapshot(cache: MultiLevelCache, *, hidden: Sequence[str] = HIDDEN) -> dict[str, str]:
    """Every entry under the cache's namespace, by key: "L1+L2" (memory and Redis) or "L2"."""
    ns = cache.namespace
    match = glob_escape(ns) + "*"
    keys = sorted(
        [k.decode()[len(ns) :] async for k in cache.redis.scan_iter(match=match, count=1000)]
    )
    return {
        k: "L1+L2" if cache.key(k) in cache.l1 else "L2"
        for k in keys
        if not k.startswith(tuple(hidden))
    }


def before_after(
    before: Mapping[str, str],
    *afters: Mapping[str, str],
    tags: Mapping[str, Sequence[str]] | None = None,
    names: Sequence[str] = ("after",),
) -> pd.DataFrame:
    """One row per key of `before`: its tags, where it was, and where it is in each `after`."""
    tags = tags or {}
    rows: dict[str, dict[str, str]] = {
        k: {"tags": ", ".join(tags.get(k, [])), "before": where} for k, where in before.items()
    }
    for name, after in zip(names, afters, strict=False):
        for k, row in rows.items():
            row[name] = after.get(k, DROPPED)
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")


def only_dropped(table: pd.DataFrame, column: str = "after") -> pd.DataFrame:
    """The rows of a `before_after` table whose key is gone in `column`."""
    return table[table[column] == DROPPED]


def describe(report: InvalidationReport) -> str:
    """An `InvalidationReport` as a few lines: the targets, what went, and any failed step."""
    lines = [
        f"{report.event} {report.payload}",
        f"  keys:     {report.keys}",
        f"  tags:     {report.tags}",
        f"  patterns: {report.patterns}",
        f"  removed:  {report.counts} -> {report.removed} keys",
    ]
    return "\n".join(lines + [f"  FAILED {f.step}: {f.error}" for f in report.failures])


def kind_of(key: str) -> str:
    """The kind of a notebook 04 entry, for grouping: policy, customer, quote PDF, summary..."""
    if key.startswith("policies:summary"):
        return "summary"
    if key.endswith(":policies"):
        return "policy list"
    if key.endswith(":pdf"):
        return "quote PDF"
    first = key.split(":")[0]
    return "agent stats" if first == "agent" else first


def kind_counts(
    before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[list[str], list[int], list[int]]:
    """(kinds, entries kept, entries dropped) by `kind_of`, for a bar chart of one event."""
    kinds = sorted({kind_of(k) for k in before})
    kept = [sum(kind_of(k) == c for k in after) for c in kinds]
    gone = [sum(kind_of(k) == c and k not in after for k in before) for c in kinds]
    return kinds, kept, gone


async def commands(
    client: aioredis.Redis, action: Callable[[], Awaitable[T]]
) -> tuple[T, dict[str, int]]:
    """Await `action()`; return its result and the commands the server received meanwhile.

    Read from `INFO commandstats` before and after, so it counts every client's commands: on a
    class's shared server, classmates' commands are counted too. The INFO calls are left out.
    """

    def calls(info: Mapping[str, Any]) -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

    before = calls(await client.info("commandstats"))
    result = await action()
    after = calls(await client.info("commandstats"))
    sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    sent.pop("info", None)
    return result, dict(sorted(sent.items()))
