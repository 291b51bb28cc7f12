"""Notebook 03's exercise checks: the access log, loader, reads and verdicts behind its two
check cells (which stay short: they call `two_instances_problems` and `warm_problems`)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from labcache.multilevel import MultiLevelCache
from labcache.warming import WarmPlan, WarmResult


def exercise_log(seed: int = 11) -> list[str]:
    """A shuffled access log whose 50 most requested keys are not its first 50 distinct keys.

    80 popular policies are requested 81, 80, ..., 2 times (no two alike, so the top 50 has no
    tie at its edge), among 600 policies requested once each: 3,920 requests.
    """
    log = [f"policy:{10_000 + rank}" for rank in range(80) for _ in range(81 - rank)]
    log += [f"policy:{20_000 + i}" for i in range(600)]
    random.Random(seed).shuffle(log)
    return log


def first_seen(log: list[str], n: int) -> set[str]:
    """The first `n` distinct keys of a log: what warming "the first 50" would pick."""
    return set(list(dict.fromkeys(log))[:n])


class CountingLoader:
    """The check's `load_policy(key)`: answers at once and counts its calls per key."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def __call__(self, key: str) -> dict[str, str]:
        self.calls[key] += 1
        await asyncio.sleep(0)
        return self.value(key)

    @staticmethod
    def value(key: str) -> dict[str, str]:
        """What the loader returns for `key` (so a stored value can be traced to its key)."""
        return {"policy_id": key.removeprefix("policy:")}


async def _nothing() -> Any:
    return None


async def read(cache: MultiLevelCache, key: str) -> tuple[Any, str]:
    """Read `key` through `cache` (a miss loads None); return the value and the level that served
    it: l1, l2 or source."""
    l1, l2 = cache.stats.l1_hits, cache.stats.l2_hits
    value = await cache.get(key, _nothing)
    level = "l1" if cache.stats.l1_hits > l1 else "l2" if cache.stats.l2_hits > l2 else "source"
    return value, level


def hears(writer: MultiLevelCache, reader: MultiLevelCache) -> bool:
    """Whether `reader` applies `writer`'s backplane messages: one channel, both ends on."""
    return (
        writer is not reader
        and writer.backplane is not None
        and reader.backplane is not None
        and reader.backplane.running
        and writer.backplane.channel == reader.backplane.channel
    )


async def read_after_write(
    writer: MultiLevelCache, reader: MultiLevelCache, key: str
) -> list[tuple[Any, str]]:
    """Writer sets {"premium": 1}, reader reads twice (its L1 now holds it), writer sets
    {"premium": 2}, reader reads again: the (value, level) of the reader's three reads.

    When the reader can hear the writer, each write is followed by waiting until the reader has
    applied its message (no read races a message); otherwise the reads follow at once.
    """
    reads = []
    for premium, n_reads in ((1, 2), (2, 1)):
        listening = hears(writer, reader)
        seen = reader.backplane.received if reader.backplane is not None else 0
        await writer.set(key, {"premium": premium})
        if listening and reader.backplane is not None:
            await reader.backplane.wait_received(seen + 1)
        for _ in range(n_reads):
            reads.append(await read(reader, key))
    return reads


async def two_instances_problems(
    a: MultiLevelCache, b: MultiLevelCache, namespace: str, own_prefix: str
) -> list[str]:
    """What is wrong with exercise 1's (a, b) on `namespace`: [] when each hears the other.

    Writes go only to instances whose namespace starts with `own_prefix` (the student's keys).
    """
    problems = []
    if a is b:
        problems.append(
            "a and b are one object: two processes means two instances, each with its own L1"
        )
    for name, c in (("a", a),) if a is b else (("a", a), ("b", b)):
        if c.namespace != namespace:
            problems.append(
                f"{name} is on namespace {c.namespace!r}, not {namespace!r}: "
                "instances hear each other only on one namespace"
            )
        if c.backplane is None:
            problems.append(
                f"{name} was made with backplane=False: "
                "it neither announces its writes nor hears the other's"
            )
        elif not c.backplane.running:
            problems.append(
                f"{name}'s backplane is not listening: `await {name}.start()` it "
                "(an `async with` block stops it on return)"
            )
    if a is b or not (a.namespace.startswith(own_prefix) and b.namespace.startswith(own_prefix)):
        return problems
    for w, writer, r, reader in (("a", a, "b", b), ("b", b, "a", a)):
        (first, level), _, (last, last_level) = await read_after_write(
            writer, reader, f"policy:{w}-to-{r}"
        )
        if first != {"premium": 1}:
            problems.append(
                f"{r} read {first!r} from {level} after {w} wrote {{'premium': 1}}: "
                "they do not share Redis keys"
            )
        elif last != {"premium": 2}:
            problems.append(
                f"after {w}.set(...) wrote {{'premium': 2}}, {r} served {last!r} from "
                f"{last_level}: its old L1 copy (mistake 5)"
            )
    return problems


async def close_all(*caches: MultiLevelCache, own_prefix: str) -> None:
    """Drop the keys of each distinct cache under `own_prefix`, then close it."""
    for c in {id(c): c for c in caches}.values():
        if c.namespace.startswith(own_prefix):
            await c.invalidate_pattern("*")
        await c.close()


async def warm_problems(
    target: MultiLevelCache,
    result: Any,
    log: list[str],
    loader: CountingLoader,
    plan: WarmPlan,
    now: float,
) -> list[str]:
    """What is wrong with exercise 2's warm of `target` (its clock standing at `now`): [] if
    exactly the 50 most requested keys of `log` are in Redis and L1, loaded once each, with
    `plan`'s TTLs, and `result` is the warm's WarmResult."""
    top = {key for key, _ in Counter(log).most_common(50)}
    in_redis = {
        k.decode().removeprefix(target.namespace)
        async for k in target.redis.scan_iter(match=target.key("*"), count=1000)
    }
    problems = []
    if in_redis != top:
        hint = (
            ": those are the first 50 keys the log names, not the 50 it requests most"
            if in_redis == first_seen(log, 50)
            else ""
        )
        problems.append(
            f"Redis holds {len(in_redis)} keys; {len(top - in_redis)} of the 50 most requested "
            f"are missing and {len(in_redis - top)} others are there{hint}"
        )
    calls = loader.calls
    if sum(calls.values()) != len(in_redis) or any(n > 1 for n in calls.values()):
        problems.append(
            f"load_policy was called {sum(calls.values())} times, with {len(calls)} distinct "
            f"key(s); warming {len(in_redis)} keys needs one call per key"
        )
    ttls = [await target.redis.pttl(target.key(k)) / 1000 for k in sorted(in_redis)]
    if ttls and not all(plan.ttl - 60 < t <= plan.ttl for t in ttls):
        problems.append(
            f"Redis TTLs are {min(ttls):.0f}-{max(ttls):.0f} s; plan.ttl is {plan.ttl:.0f} s"
        )
    in_l1 = {
        k.removeprefix(target.namespace): round(e.expires_at - now, 3) for k, e in target.l1.items()
    }
    if set(in_l1) != in_redis:
        problems.append(
            f"L1 holds {len(set(in_l1) & in_redis)} of the {len(in_redis)} keys in Redis; "
            "warming fills memory too"
        )
    elif set(in_l1.values()) - {plan.memory_ttl}:
        problems.append(
            f"L1 copies live {sorted(set(in_l1.values()))} s; "
            f"plan.memory_ttl is {plan.memory_ttl:.0f} s"
        )
    wrong = {}
    for k in sorted(in_redis):
        value = await target.get(k, _nothing, skip_memory=True)
        if value != loader.value(k):
            wrong[k] = value
    if wrong:
        problems.append(
            f"{len(wrong)} keys hold another value than load_policy(key) gives, "
            f"e.g. {next(iter(wrong.items()))}"
        )
    if not isinstance(result, WarmResult) or result.warmed != len(in_redis):
        problems.append(f"return the WarmResult of the warm; got {result!r}")
    return problems
