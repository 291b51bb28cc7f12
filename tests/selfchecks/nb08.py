"""Notebook 08's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
Notebook 08 runs on a private local Redis Cluster that its `cluster` cell starts (never the
suite's server); CLEANUP stops it.
"""

from __future__ import annotations

from tests.selfchecks import Case

# The cluster and its friendly node names, the cluster client, and the command counter.
SETUP = ["imports", "cluster", "connect", "commands"]

KEYS = "def customer_keys(namespace, cid):\n"
PARTS = "for part in ('profile', 'policies', 'quotes')"
COUNT = "async def count_matching(redis, pattern):\n"

CASES: list[Case] = [
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "customer_keys()")),
    (  # no hash tag: the three keys hash whole, to three slots
        KEYS + f"    return [f'{{namespace}}customer:{{cid}}:{{part}}' {PARTS}]",
        "ex1-check",
        ("FAIL", "for 60 of 60 customers one UNLINK of their 3 keys was refused (CROSSSLOT)"),
    ),
    (  # the same tag for every customer: one slot, one primary holds everything
        KEYS + f"    return [f'{{namespace}}{{{{customer}}}}:{{cid}}:{{part}}' {PARTS}]",
        "ex1-check",
        ("FAIL", "the 60 customers whose keys share a slot all landed on primary"),
    ),
    (  # the namespace as the hash tag (section 1's mistake): the keys leave the namespace
        KEYS + f"    return [f'{{{{{{namespace}}}}}}customer:{{cid}}:{{part}}' {PARTS}]",
        "ex1-check",
        ("FAIL", "expected 3 distinct keys starting with 'nb08:'"),
    ),
    (  # a tag on two of the three keys only
        KEYS + "    tag = f'{{customer:{cid}}}'\n"
        "    return [f'{namespace}{tag}:profile', f'{namespace}{tag}:policies',\n"
        "            f'{namespace}customer:{cid}:quotes']",
        "ex1-check",
        ("FAIL", "was refused (CROSSSLOT)"),
    ),
    ("from labcache.lab.solutions.nb08 import customer_keys", "ex1-check", ("PASS",)),
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "count_matching()")),
    (  # KEYS, on every primary: the right number, the wrong command
        COUNT + "    return len(await redis.keys(pattern, target_nodes=redis.PRIMARIES))",
        "ex2-check",
        ("FAIL", "KEYS command(s)"),
    ),
    (  # KEYS as redis-py sends it by default: one node only, and KEYS
        COUNT + "    return len(await redis.keys(pattern))",
        "ex2-check",
        ("FAIL", "KEYS command(s)", "only the keys on primary"),
    ),
    (  # a full SCAN walk, on one primary only
        COUNT + "    node, total, cursor = redis.get_primaries()[0], 0, 0\n"
        "    while True:\n"
        "        cursors, keys = await redis.scan(\n"
        "            cursor=cursor, match=pattern, count=500, target_nodes=node)\n"
        "        total, cursor = total + len(keys), cursors[node.name]\n"
        "        if cursor == 0:\n"
        "            return total",
        "ex2-check",
        ("FAIL", "only the keys on primary", "walk every primary"),
    ),
    (  # every primary, but only the first SCAN page of each
        COUNT + "    cursors, keys = await redis.scan(match=pattern, count=1000)\n"
        "    return len(keys)",
        "ex2-check",
        ("FAIL", "until each one's cursor came back to 0"),
    ),
    ("from labcache.lab.solutions.nb08 import count_matching", "ex2-check", ("PASS",)),
]

CLEANUP = (
    "await cache.close()\n"
    "await unlink_matching(redis, NS + '*')\n"
    "await redis.aclose()\n"
    "cluster.stop()"
)
