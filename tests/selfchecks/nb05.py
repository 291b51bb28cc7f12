"""Notebook 05's exercise checks: each case is (answer cell id or code, check cell id, fragments).

`tests/test_notebook_selfchecks.py` runs them. Both checks count, never time: exercise 1 replays
the notebook's `scenario` on a virtual clock (and made-up frames), exercise 2 feeds a tally from
three caches (a fresh one, one with grace on a virtual clock, one whose circuit breaker is open).
The checks' logic is in `labcache/lab/checks/nb05.py`.
"""

from __future__ import annotations

from tests.selfchecks import Case

SETUP = ["imports", "connect", "scenario"]

CASES: list[Case] = [
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "choose_policy_ttl()")),
    (  # the value that passed the old check, hard-coded
        "async def choose_policy_ttl(run, candidates, target):\n    return 20",
        "ex1-check",
        ("FAIL", "with made-up runs and target 60% you chose 20", "12 s the shortest"),
    ),
    (  # every request's hit rate, not the policies'
        "async def choose_policy_ttl(run, candidates, target):\n"
        "    for ttl in sorted(candidates):\n"
        "        frame = await run(ttl)\n"
        "        if (frame['level'] != 'source').mean() >= target:\n"
        "            return ttl",
        "ex1-check",
        ("FAIL", "you chose 3", "count only policy"),
    ),
    (  # stale answers counted as misses
        "async def choose_policy_ttl(run, candidates, target):\n"
        "    for ttl in sorted(candidates):\n"
        "        frame = await run(ttl)\n"
        "        policies = frame[frame['kind'] == 'policy']\n"
        "        if policies['level'].isin(['l1', 'l2']).mean() >= target:\n"
        "            return ttl",
        "ex1-check",
        ("FAIL", "you chose 24", "every level but the source"),
    ),
    (  # the longest TTL always reaches the target: not the shortest
        "async def choose_policy_ttl(run, candidates, target):\n    return max(candidates)",
        "ex1-check",
        ("FAIL", "you chose 80", "you chose 48"),
    ),
    (
        "from labcache.lab.solutions.nb05 import choose_policy_ttl",
        "ex1-check",
        ("PASS", "12 s on made-up runs"),
    ),
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "honest_tally()")),
    (  # knows hit and miss only: stale and fallback answers go uncounted
        "def honest_tally(event, tally):\n"
        "    if event.kind in ('hit', 'miss'):\n"
        "        tally['requests'] += 1\n"
        "        tally['hits'] += event.kind == 'hit'",
        "ex2-check",
        ("FAIL", "the stale part", "counted 10 requests and 0 hits", "the fallback part"),
    ),
    (  # a stale answer counted as a miss
        "def honest_tally(event, tally):\n"
        "    if event.kind in ('hit', 'miss', 'stale', 'fallback'):\n"
        "        tally['requests'] += 1\n"
        "        tally['hits'] += event.kind == 'hit'",
        "ex2-check",
        ("FAIL", "the stale part", "counted 20 requests and 0 hits", "10 hits"),
    ),
    (  # fallbacks forgotten
        "def honest_tally(event, tally):\n"
        "    if event.kind in ('hit', 'miss', 'stale'):\n"
        "        tally['requests'] += 1\n"
        "        tally['hits'] += event.kind in ('hit', 'stale')",
        "ex2-check",
        ("FAIL", "the fallback part", "counted 0 requests"),
    ),
    (  # every event taken for a request (load and set too)
        "def honest_tally(event, tally):\n"
        "    tally['requests'] += 1\n"
        "    tally['hits'] += event.kind == 'hit'",
        "ex2-check",
        ("FAIL", "the cold pass", "CacheMonitor counts 30 requests, 0 hits"),
    ),
    ("from labcache.lab.solutions.nb05 import honest_tally", "ex2-check", ("PASS",)),
]

CLEANUP = "await unlink_matching(redis, NS + '*')"
