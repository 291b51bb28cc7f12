"""Invalidation (Part 4): rules, tags, patterns, cascade, bulk guards and the quote cleanup.

Everything runs against a real redis-server; "which keys are left" is read back from Redis.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.invalidation import (
    InvalidationRefused,
    Invalidator,
    QuoteCleanup,
    Targets,
    expiring_soon,
    matches_everything,
)
from labcache.keys import glob_escape
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.rules import (
    AGENT_STATS_CHANGED,
    CUSTOMER_UPDATED,
    LAB_RULES,
    POLICY_UPDATED,
    QUOTE_EXPIRED,
)
from labcache.multilevel import MultiLevelCache
from tests.helpers import Loader, command_counts, commands_sent

# key -> the tags it is cached with: the course's tag vocabulary (see labcache.invalidation).
DATASET: dict[str, list[str]] = {
    "policy:1": ["policy:1", "customer:c1"],  # a policy shows its holder's name
    "policy:2": ["policy:2", "customer:c2"],
    "customer:c1": ["customer:c1"],
    "customer:c2": ["customer:c2"],
    "customer:c1:policies": ["customer:c1"],
    "customer:c2:policies": ["customer:c2"],
    "quote:q1": ["quote:q1", "customer:c1"],  # priced with c1's risk score
    "quote:q2": ["quote:q2", "customer:c2"],
    "quote:temp:q1:step1": ["quote:q1"],
    "agent:stats:A1": ["agent:A1"],
    "agent:stats:A2": ["agent:A2"],
    "leaderboard:top10": ["leaderboard"],
    "leaderboard:region:west": ["leaderboard"],
    "policies:summary:active": ["policy:1", "policy:2"],
    "xpolicy:19": [],
    "untagged": [],
}


@pytest.fixture
def invalidator(cache: MultiLevelCache) -> Invalidator:
    return Invalidator(cache, rules=LAB_RULES)


async def populate(cache: MultiLevelCache, keys: dict[str, list[str]] = DATASET) -> None:
    for key, tags in keys.items():
        await cache.set(key, {"key": key}, ttl=300, tags=tags)


async def cached(cache: MultiLevelCache) -> set[str]:
    """The cache keys that exist in Redis (tag sets left out)."""
    ns = cache.namespace
    found = {k.decode()[len(ns) :] async for k in cache.redis.scan_iter(match=ns + "*")}
    return {k for k in found if not k.startswith("__")}


async def dropped_by(invalidator: Invalidator, event: str, **payload: object) -> set[str]:
    cache = invalidator.cache
    assert isinstance(cache, MultiLevelCache)
    await populate(cache)
    before = await cached(cache)
    report = await invalidator.emit(event, **payload)
    assert report.ok, report.failures
    return before - await cached(cache)


# -- the four built-in rules -------------------------------------------------------------------


async def test_policy_updated_drops_the_policy_and_what_is_tagged_with_it(
    invalidator: Invalidator,
) -> None:
    assert await dropped_by(invalidator, POLICY_UPDATED, policy_id=1) == {
        "policy:1",
        "policies:summary:active",
    }


async def test_policy_updated_with_a_customer_drops_their_policy_list(
    invalidator: Invalidator,
) -> None:
    dropped = await dropped_by(invalidator, POLICY_UPDATED, policy_id="1", customer_id="c1")
    assert dropped == {"policy:1", "policies:summary:active", "customer:c1:policies"}


async def test_customer_updated_drops_that_customer_only_by_tag(invalidator: Invalidator) -> None:
    dropped = await dropped_by(invalidator, CUSTOMER_UPDATED, customer_id="c1")
    # Not `customer:*` (mistake 16): customer c2 and everything of theirs survive.
    assert dropped == {"customer:c1", "customer:c1:policies", "policy:1", "quote:q1"}


async def test_quote_expired_drops_the_quote_and_its_temporary_data(
    invalidator: Invalidator,
) -> None:
    dropped = await dropped_by(invalidator, QUOTE_EXPIRED, quote_id="q1", customer_id="c1")
    assert dropped == {"quote:q1", "quote:temp:q1:step1"}


async def test_agent_stats_changed_drops_the_stats_and_every_leaderboard(
    invalidator: Invalidator,
) -> None:
    dropped = await dropped_by(invalidator, AGENT_STATS_CHANGED, agent_id="A1")
    assert dropped == {"agent:stats:A1", "leaderboard:top10", "leaderboard:region:west"}


async def test_the_report_says_what_was_asked_and_what_was_dropped(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    await populate(cache)
    report = await invalidator.emit(CUSTOMER_UPDATED, customer_id="c1")
    assert report.event == CUSTOMER_UPDATED and report.payload == {"customer_id": "c1"}
    assert (report.keys, report.tags, report.patterns) == (["customer:c1"], ["customer:c1"], [])
    assert sorted(report.tag_members["customer:c1"]) == [
        "customer:c1",
        "customer:c1:policies",
        "policy:1",
        "quote:q1",
    ]
    # Tags run first: customer:c1 goes with its tag, so the key step finds nothing left.
    assert report.counts == {"keys": 0, "tags": 4, "patterns": 0}
    assert report.removed == 4 and report.ok


async def test_a_customer_update_reaches_the_policy_through_its_tag(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    db = InsuranceDB(latency=Latency.zero())
    policy_id = db.policy_ids()[0]
    holder = (await db.get_policy(policy_id))["customer_id"]  # type: ignore[index]

    async def load_policy() -> object:
        return await db.get_policy(policy_id)

    tags = [f"policy:{policy_id}", f"customer:{holder}"]
    before = await cache.get(f"policy:{policy_id}", load_policy, tags=tags)
    await db.update_customer(holder, name="Renamed Holder")
    await invalidator.emit(CUSTOMER_UPDATED, customer_id=holder)
    db.reset_calls()
    after = await cache.get(f"policy:{policy_id}", load_policy, tags=tags)
    assert before["holder"] != "Renamed Holder"  # type: ignore[index]
    assert after["holder"] == "Renamed Holder"  # type: ignore[index]
    assert db.calls["get_policy"] == 1  # the stale copy was gone from both levels


# -- registering rules, and rules that fail ----------------------------------------------------


async def test_rules_register_by_decorator_or_add_rule_and_may_be_async(
    cache: MultiLevelCache,
) -> None:
    invalidator = Invalidator(cache)
    assert invalidator.events == []

    @invalidator.rule("policy.renewed")
    def renewed(*, policy_id: str) -> Targets:
        return Targets(keys=[f"policy:{policy_id}"])

    async def summaries(**_: object) -> Targets:
        await asyncio.sleep(0)
        return Targets(tags=["policy:1"])

    invalidator.add_rule("policy.renewed", summaries)
    await populate(cache)
    report = await invalidator.emit("policy.renewed", policy_id="2")
    assert report.ok
    assert {"policy:1", "policy:2", "policies:summary:active"}.isdisjoint(await cached(cache))


async def test_a_failing_rule_is_logged_and_reported_and_the_others_still_run(
    cache: MultiLevelCache, invalidator: Invalidator, caplog: pytest.LogCaptureFixture
) -> None:
    @invalidator.rule(POLICY_UPDATED)
    def broken(**_: object) -> Targets:
        raise RuntimeError("rule bug")

    await populate(cache)
    with caplog.at_level(logging.ERROR, logger="labcache.invalidation"):
        report = await invalidator.emit(POLICY_UPDATED, policy_id="1")
    assert not report.ok
    [failure] = report.failures
    assert "broken" in failure.step and failure.error == "RuntimeError: rule bug"
    assert isinstance(failure.exception, RuntimeError)
    assert "rule bug" in caplog.text
    assert "policy:1" not in await cached(cache)  # the built-in rule still ran


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({}, "TypeError"),  # policy_id missing
        ({"policy_id": None}, "policy_id must be a non-empty str or int"),
        ({"policy_id": ""}, "policy_id must be a non-empty str or int"),
        ({"policy_id": True}, "policy_id must be a non-empty str or int"),
    ],
)
async def test_bad_payloads_are_reported_not_raised(
    invalidator: Invalidator, payload: dict[str, object], error: str
) -> None:
    report = await invalidator.emit(POLICY_UPDATED, **payload)
    assert len(report.failures) == 1 and error in report.failures[0].error
    assert report.removed == 0


async def test_a_rule_returning_something_else_is_a_failure(invalidator: Invalidator) -> None:
    invalidator.add_rule("odd", lambda **_: ["policy:1"])
    report = await invalidator.emit("odd")
    assert "returned list, not Targets" in report.failures[0].error


async def test_an_unknown_event_is_a_clear_error(invalidator: Invalidator) -> None:
    with pytest.raises(ValueError, match=r"no invalidation rule for event 'policy\.update'"):
        await invalidator.emit("policy.update", policy_id=1)


# -- tags: precise, across instances, and atomic -----------------------------------------------


async def test_tags_drop_other_instances_l1_too_and_keep_untagged_entries(
    redis: aioredis.Redis, namespace: str
) -> None:
    async with (
        MultiLevelCache(redis, namespace=namespace) as a,
        MultiLevelCache(redis, namespace=namespace) as b,
    ):
        loaders = {key: Loader({"key": key}) for key in DATASET}
        for key, tags in DATASET.items():
            await b.get(key, loaders[key], tags=tags)  # B loads: Redis and B's L1 hold all
        assert set(b.l1.keys()) == {namespace + k for k in DATASET}
        received = b.backplane.received  # type: ignore[union-attr]

        report = await Invalidator(a, rules=LAB_RULES).emit(CUSTOMER_UPDATED, customer_id="c1")
        await b.backplane.wait_received(received + 2)  # type: ignore[union-attr]  # key + tag

        dropped = {"customer:c1", "customer:c1:policies", "policy:1", "quote:q1"}
        assert set(report.tag_members["customer:c1"]) <= dropped
        assert {k[len(namespace) :] for k in b.l1} == set(DATASET) - dropped
        assert await cached(a) == set(DATASET) - dropped
        hits = b.stats.l1_hits
        await b.get("customer:c2", loaders["customer:c2"])  # untagged by c1: still in B's L1
        await b.get("customer:c1", loaders["customer:c1"])  # dropped: B reloads it
        assert b.stats.l1_hits == hits + 1
        assert (loaders["customer:c2"].calls, loaders["customer:c1"].calls) == (1, 2)


async def test_a_tag_set_lives_as_long_as_its_longest_member(cache: MultiLevelCache) -> None:
    await cache.set("a", 1, ttl=100, tags=["t"])
    await cache.set("b", 2, ttl=10, tags=["t"])  # a shorter member never shortens the set
    assert 99_000 < await cache.redis.pttl(cache.tag_key("t")) <= 100_000
    await cache.set("c", 3, ttl=500, tags=["t"])
    assert 499_000 < await cache.redis.pttl(cache.tag_key("t")) <= 500_000


async def test_invalidating_a_tag_deletes_its_set(cache: MultiLevelCache) -> None:
    await cache.set("a", 1, tags=["t"])
    assert await cache.invalidate_tag("t") == ["a"]
    assert await cache.redis.exists(cache.tag_key("t")) == 0
    assert await cache.invalidate_tag("t") == []


async def test_without_atomicity_a_set_during_invalidate_escapes_the_tag(
    redis: aioredis.Redis, namespace: str
) -> None:
    """Why both tag operations are single Lua scripts: the naive steps can interleave."""
    tag = namespace + "tag"
    members = await redis.smembers(tag)  # naive invalidate, step 1: read the members (none yet)
    await redis.set(namespace + "k", "v")  # naive set, between the steps: SET, then SADD
    await redis.sadd(tag, namespace + "k")
    if members:
        await redis.unlink(*members)
    await redis.delete(tag)  # naive invalidate, step 2: drop the set, and the membership with it
    assert await redis.exists(namespace + "k") == 1
    assert await redis.sismember(tag, namespace + "k") == 0  # an orphan: the next one misses it


async def test_sets_during_tag_invalidations_are_never_orphaned(cache: MultiLevelCache) -> None:
    """A set racing an invalidate_tag is either dropped with the tag or recorded after it.

    Both are one Lua script each, and Redis runs a script without interleaving anything else, so
    there is no moment where a key exists with its tag membership lost. (It does not stop a load
    that read the source *before* an update from writing its old value *after* the invalidation:
    that race belongs to every delete-based invalidation and is bounded by the TTL.)
    """
    keys = [f"k{i}" for i in range(300)]
    gate = asyncio.Semaphore(20)  # bounded, so the pool is not exhausted (FACTS.md)
    dropped: set[str] = set()

    async def write(key: str) -> None:
        async with gate:
            await cache.set(key, key, tags=["hot"])

    async def invalidate() -> None:
        async with gate:
            dropped.update(await cache.invalidate_tag("hot"))

    ops = []
    for i, key in enumerate(keys):
        if i % 15 == 0:
            ops.append(invalidate())
        ops.append(write(key))
    await asyncio.gather(*ops)

    alive = await cached(cache)
    tagged = await cache.redis.smembers(cache.tag_key("hot"))
    members = {m.decode()[len(cache.namespace) :] for m in tagged}
    assert alive <= members  # every surviving key is still findable through its tag
    assert alive | dropped == set(keys)
    assert dropped  # the invalidations really did run between the writes
    await cache.invalidate_tag("hot")
    assert await cached(cache) == set()


# -- patterns, SCAN COUNT, and never KEYS ------------------------------------------------------


async def test_a_pattern_rule_escapes_ids_from_the_payload(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    @invalidator.rule("draft.discarded")
    def drafts(*, draft_id: str) -> Targets:
        return Targets(patterns=[f"draft:{glob_escape(draft_id)}:*"])

    await populate(cache, {"draft:1*:a": [], "draft:1*:b": [], "draft:10:a": [], "draft:1:a": []})
    report = await invalidator.emit("draft.discarded", draft_id="1*")
    assert report.counts["patterns"] == 2
    assert await cached(cache) == {"draft:10:a", "draft:1:a"}


async def test_scan_count_sets_the_page_size(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    calls = {}
    for count in (1000, 5):
        async with MultiLevelCache(client, namespace="p:", backplane=False) as cache:
            await populate(cache, {f"old:{i}": [] for i in range(60)})
            before = await command_counts(client)
            await Invalidator(cache, scan_count=count).bulk(["old:*"], confirm=True)
            calls[count] = (await commands_sent(client, before))["scan"]
    await client.aclose()
    assert calls[1000] == 1 and calls[5] >= 5


async def test_no_code_path_sends_keys(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    async with MultiLevelCache(client, namespace="nk:") as cache:
        invalidator = Invalidator(cache, rules=LAB_RULES, scan_count=10)
        invalidator.add_rule("x", lambda **_: Targets(patterns=["policy:*"]))
        await populate(cache)
        before = await command_counts(client)
        await invalidator.emit(POLICY_UPDATED, policy_id=1, customer_id="c1")
        await invalidator.emit(CUSTOMER_UPDATED, customer_id="c2")
        await invalidator.emit(QUOTE_EXPIRED, quote_id="q1")
        await invalidator.emit(AGENT_STATS_CHANGED, agent_id="A1")
        await invalidator.emit("x")
        await invalidator.cascade("policy:2", tags=["policy:2"], patterns=["policies:summary:*"])
        await invalidator.bulk(["leaderboard:*"], confirm=True)
        await cache.set("quote:q3", 1, ttl=5)
        assert await QuoteCleanup(cache, threshold=60).run_once() == ["quote:q3"]
        await invalidator.bulk("*", confirm="everything")
        sent = await commands_sent(client, before)
    # The check can see KEYS when it is sent:
    before = await command_counts(client)
    await client.keys("nk:*")
    assert (await commands_sent(client, before)).get("keys") == 1
    await client.aclose()
    assert "keys" not in sent
    assert sent["scan"] > 0 and sent["unlink"] > 0


# -- cascade and bulk --------------------------------------------------------------------------


async def test_cascade_drops_the_primary_key_its_tags_and_patterns(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    await populate(cache)
    report = await invalidator.cascade(
        "policy:2", tags=["policy:2"], patterns=["leaderboard:region:*"]
    )
    assert report.event == "cascade" and report.ok
    assert report.counts == {"keys": 0, "tags": 2, "patterns": 1}
    gone = {"policy:2", "policies:summary:active", "leaderboard:region:west"}
    assert await cached(cache) == set(DATASET) - gone


async def test_cascade_by_customer_pattern_wipes_every_customer(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    """Mistake 16, kept as a test so the lesson stays true: a pattern is not a relationship."""
    await populate(cache)
    await invalidator.cascade("policy:2", patterns=["customer:*"])
    assert not {k for k in await cached(cache) if k.startswith("customer:")}


async def test_cascade_refuses_a_namespace_wide_pattern_before_dropping_anything(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    await populate(cache)
    with pytest.raises(InvalidationRefused, match="matches every key"):
        await invalidator.cascade("policy:1", patterns=["policies:*", "*"])
    assert await cached(cache) == set(DATASET)
    with pytest.raises(ValueError, match="must not be empty"):
        await invalidator.cascade("", tags=["policy:1"])


async def test_bulk_refuses_without_confirmation(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    await populate(cache)
    for confirm in (False, "yes", 1):
        with pytest.raises(InvalidationRefused, match=r"confirm=True"):
            await invalidator.bulk(["policy:*"], confirm=confirm)  # type: ignore[arg-type]
    assert await cached(cache) == set(DATASET)
    report = await invalidator.bulk(["policy:*", "quote:temp:*"], confirm=True)
    assert report.counts["patterns"] == 3
    assert await cached(cache) == set(DATASET) - {"policy:1", "policy:2", "quote:temp:q1:step1"}


@pytest.mark.parametrize("pattern", ["*", "**", "?*", "*?*", "[^]*"])
async def test_bulk_refuses_the_whole_namespace_unless_confirmed_twice(
    cache: MultiLevelCache, invalidator: Invalidator, pattern: str
) -> None:
    await populate(cache)
    with pytest.raises(InvalidationRefused, match=r"confirm='everything'"):
        await invalidator.bulk([pattern], confirm=True)
    assert await cached(cache) == set(DATASET)
    report = await invalidator.bulk(pattern, confirm="everything")  # one str is one pattern
    assert report.counts["patterns"] >= len(DATASET)
    assert await cached(cache) == set()


async def test_bulk_needs_a_pattern(invalidator: Invalidator) -> None:
    with pytest.raises(ValueError, match="at least one pattern"):
        await invalidator.bulk([], confirm=True)
    with pytest.raises(ValueError, match="non-empty str"):
        await invalidator.bulk([""], confirm=True)


async def test_a_rule_cannot_wipe_the_namespace(
    cache: MultiLevelCache, invalidator: Invalidator
) -> None:
    invalidator.add_rule("oops", lambda **_: Targets(keys=["untagged"], patterns=["*"]))
    await populate(cache)
    report = await invalidator.emit("oops")
    assert report.failures[0].step == "pattern *"
    assert "InvalidationRefused" in report.failures[0].error
    assert await cached(cache) == set(DATASET) - {"untagged"}


@pytest.mark.parametrize(
    ("pattern", "everything"),
    [
        ("*", True),
        ("***", True),
        ("?*?", True),
        ("[^]*", True),
        ("?", False),
        ("policy:*", False),
        ("\\*", False),
        ("[*]", False),
        ("*.*", False),
        ("*a*", False),
    ],
)
def test_matches_everything(pattern: str, everything: bool) -> None:
    assert matches_everything(pattern) is everything


# -- the expiring-quote cleanup ----------------------------------------------------------------


async def test_cleanup_only_removes_quotes_with_a_positive_ttl_under_the_threshold(
    cache: MultiLevelCache,
) -> None:
    redis, ns = cache.redis, cache.namespace
    await cache.set("quote:soon", 1, ttl=30)  # expiring within the minute
    await cache.set("quote:later", 2, ttl=600)
    await cache.set("policy:soon", 3, ttl=30)  # expiring, but not a quote
    await cache.set("quote:tagged", 4, ttl=30, tags=["quote:tagged"])
    await redis.set(ns + "quote:forever", "x")  # TTL -1: no expiry at all (mistake 12)
    assert await redis.ttl(ns + "quote:forever") == -1
    assert await redis.ttl(ns + "quote:gone") == -2
    assert set(cache.l1.keys()) >= {ns + "quote:soon", ns + "quote:tagged"}

    cleanup = QuoteCleanup(cache, threshold=60, count=2)
    assert sorted(await cleanup.run_once()) == ["quote:soon", "quote:tagged"]
    assert await cached(cache) == {"quote:later", "policy:soon", "quote:forever"}
    assert await redis.exists(cache.tag_key("quote:tagged")) == 1  # tag sets are not quotes
    assert ns + "quote:soon" not in cache.l1
    assert await cleanup.run_once() == []
    assert cleanup.removed == 2


async def test_the_lab_cleanup_deletes_a_key_with_no_expiry(cache: MultiLevelCache) -> None:
    """Mistake 12 on the naive condition `ttl <= 60`, kept to show what the fix is for."""
    await cache.redis.set(cache.namespace + "quote:forever", "x")
    ttl = await cache.redis.ttl(cache.namespace + "quote:forever")
    assert ttl <= 60  # the lab's test: -1 counts as "expiring"
    assert not 0 < ttl < 60  # ours


@pytest.mark.parametrize(
    ("pttl_ms", "expiring"),
    [(-2, False), (-1, False), (0, False), (1, True), (59_999, True), (60_000, False)],
)
def test_only_a_positive_ttl_under_the_threshold_is_expiring(pttl_ms: int, expiring: bool) -> None:
    assert expiring_soon(pttl_ms, threshold=60) is expiring


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 0}, "threshold"),
    ({"threshold": -1}, "threshold"),
    ({"interval": 0}, "interval"),
    ({"count": 0}, "count"),
])  # fmt: skip
def test_cleanup_rejects_bad_settings(
    cache: MultiLevelCache, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        QuoteCleanup(cache, **kwargs)


async def test_cleanup_task_runs_until_stopped_and_is_cancelled(cache: MultiLevelCache) -> None:
    def cleanup_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "quote-cleanup"]

    await cache.set("quote:soon", 1, ttl=30)
    async with QuoteCleanup(cache, threshold=60, interval=0.01) as cleanup:
        [task] = cleanup_tasks()
        assert cleanup.running
        assert cleanup.start() is cleanup and cleanup_tasks() == [task]  # still one task
        await cleanup.wait_runs(3)
        assert cleanup.removed == 1 and cleanup.errors == 0
    assert task.cancelled() and not cleanup.running
    assert not cleanup_tasks()
    await cleanup.stop()  # stopping twice is harmless


async def test_cleanup_survives_redis_going_down(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="qc:", backplane=False)
    cleanup = QuoteCleanup(cache, interval=0.01).start()
    try:
        await cleanup.wait_runs(1)
        fresh_server.kill()
        await cleanup.wait_runs(cleanup.runs + 2)
        assert cleanup.errors >= 2 and cleanup.running
        fresh_server.start()
        errors = cleanup.errors
        await cache.set("quote:soon", 1, ttl=30)
        await cleanup.wait_runs(cleanup.runs + 2)
        assert cleanup.removed == 1 and cleanup.errors <= errors + 1
    finally:
        await cleanup.stop()
        await client.aclose()


async def test_emit_with_redis_down_reports_failures(fresh_server: RedisServer) -> None:
    client = aioredis.from_url(fresh_server.url)
    cache = MultiLevelCache(client, namespace="down:", backplane=False)
    fresh_server.kill()
    report = await Invalidator(cache, rules=LAB_RULES).emit(CUSTOMER_UPDATED, customer_id="c1")
    await client.aclose()
    assert [f.step for f in report.failures] == ["tag customer:c1", "keys"]
    assert all("Error" in f.error for f in report.failures)
