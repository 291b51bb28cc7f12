"""Notebook 06's exercise checks: each case is (answer cell id or code, check cell id, fragments).

`tests/test_notebook_selfchecks.py` runs them. The checks count source calls, events and TTLs:
exercise 1's source answers only once every instance has a load running or waiting, so an
answer without a shared lock loads 3 times on any machine; exercise 2 runs on a hand-moved
clock with a source that is down, hangs (forever) or answers. The checks' code is in
`labcache/lab/checks/nb06.py`; the notebook's check cells call it.
"""

from __future__ import annotations

from tests.selfchecks import Case

MC = "MultiLevelCache(redis, namespace=namespace, backplane=False"

CASES: list[Case] = [
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "make_fleet_cache()")),
    (  # single-flight only: one load per instance, three for the fleet
        "def make_fleet_cache(redis, namespace, ttl):\n"
        f"    return {MC}, default_ttl=ttl,\n"
        "                           stampede=Stampede(jitter=Jitter(fraction=0.1)))",
        "ex1-check",
        ("FAIL", "called 3 times", "shared lock in Redis"),
    ),
    (  # the lock, but every key expires at the same moment
        "def make_fleet_cache(redis, namespace, ttl):\n"
        f"    return {MC}, default_ttl=ttl,\n"
        "                           stampede=Stampede(lock=DistributedLock(redis, namespace)))",
        "ex1-check",
        ("FAIL", "expire within 0.0 s of each other", "spread their TTLs"),
    ),
    (  # lock and jitter, but the TTL given is not used (the cache's default 300 s)
        "def make_fleet_cache(redis, namespace, ttl):\n"
        f"    return {MC}, stampede=Stampede(lock=DistributedLock(redis, namespace),\n"
        "                           jitter=Jitter(fraction=0.1)))",
        "ex1-check",
        ("FAIL", "TTLs in Redis range", "± 10 %"),
    ),
    (  # no lock and no jitter
        f"def make_fleet_cache(redis, namespace, ttl):\n    return {MC}, default_ttl=ttl)",
        "ex1-check",
        ("FAIL", "called 3 times", "spread their TTLs"),
    ),
    ("from labcache.lab.solutions.nb06 import make_fleet_cache", "ex1-check", ("PASS",)),
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "make_resilient_cache()")),
    (  # grace too short: Redis has dropped the stale copy 5 minutes later
        "def make_resilient_cache(redis, namespace, clock):\n"
        f"    return {MC}, clock=clock,\n"
        "                           staleness=Staleness(grace=120, soft_timeout=0.05))",
        "ex2-check",
        ("FAIL", "Redis drops the entry", "during the outage the read raised SourceUnavailable"),
    ),
    (  # grace but no soft timeout: stale at once, never a fresh value on an expired read
        "def make_resilient_cache(redis, namespace, clock):\n"
        f"    return {MC}, clock=clock, staleness=Staleness(grace=600))",
        "ex2-check",
        ("FAIL", "without waiting for the refresh at all", "soft timeout"),
    ),
    (  # no grace, only a hard timeout: errors instead of the last value
        "def make_resilient_cache(redis, namespace, clock):\n"
        f"    return {MC}, clock=clock, stampede=Stampede(hard_timeout=0.1))",
        "ex2-check",
        ("FAIL", "Redis drops the entry", "during the outage the read raised", "within 2 s"),
    ),
    (  # a soft timeout that waits for the hanging database
        "def make_resilient_cache(redis, namespace, clock):\n"
        f"    return {MC}, clock=clock,\n"
        "                           staleness=Staleness(grace=600, soft_timeout=30))",
        "ex2-check",
        ("FAIL", "did not return the last value within 2 s"),
    ),
    ("from labcache.lab.solutions.nb06 import make_resilient_cache", "ex2-check", ("PASS",)),
]

CLEANUP = "await unlink_matching(redis, NS + '*')"
