"""Notebook 03's exercise checks: each case is (answer cell id or code, check cell id, fragments).

`tests/test_notebook_selfchecks.py` runs them after the SETUP cells, in one kernel.
"""

from __future__ import annotations

from tests.selfchecks import Case

SETUP = ["imports", "connect", "helpers"]


def _two(make: str, *, end: str = "return a, b") -> str:
    """A wrong make_two_instances() whose body is `make` (indented), then `end`."""
    body = "\n".join("    " + line for line in make.strip().splitlines())
    return f"async def make_two_instances(redis, namespace):\n{body}\n    {end}\n"


def _warm(body: str) -> str:
    """A wrong warm_top_50() whose body is `body` (indented)."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"async def warm_top_50(cache, access_log, load_policy, plan):\n{lines}\n"


CASES: list[Case] = [
    # Exercise 1: two instances that agree.
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "make_two_instances()")),
    (
        _two(
            "a = MultiLevelCache(redis, namespace=namespace, backplane=False)\n"
            "b = MultiLevelCache(redis, namespace=namespace, backplane=False)"
        ),
        "ex1-check",
        (
            "FAIL",
            "a was made with backplane=False",
            "b was made with backplane=False",
            "after a.set(...) wrote {'premium': 2}, b served {'premium': 1} from l1",
        ),
    ),
    (
        _two(
            "a = MultiLevelCache(redis, namespace=namespace)\n"
            "b = MultiLevelCache(redis, namespace=namespace)"
        ),
        "ex1-check",
        (
            "FAIL",
            "a's backplane is not listening",
            "b's backplane is not listening",
            "its old L1 copy (mistake 5)",
        ),
    ),
    (
        _two(
            "a = await MultiLevelCache(redis, namespace=namespace).start()\n"
            "b = await MultiLevelCache(redis, namespace=namespace + 'b:').start()"
        ),
        "ex1-check",
        ("FAIL", "b is on namespace", "only on one namespace", "they do not share Redis keys"),
    ),
    (  # only b listens: a's writes reach b, b's never reach a
        _two(
            "a = MultiLevelCache(redis, namespace=namespace)\n"
            "b = await MultiLevelCache(redis, namespace=namespace).start()"
        ),
        "ex1-check",
        ("FAIL", "a's backplane is not listening", "after b.set(...)", "a served {'premium': 1}"),
    ),
    (
        _two(
            "async with MultiLevelCache(redis, namespace=namespace) as a, "
            "MultiLevelCache(redis, namespace=namespace) as b:\n"
            "    return a, b"
        ),
        "ex1-check",
        ("FAIL", "an `async with` block stops it", "its old L1 copy"),
    ),
    (
        _two("a = await MultiLevelCache(redis, namespace=namespace).start()", end="return a, a"),
        "ex1-check",
        ("FAIL", "a and b are one object"),
    ),
    ("from labcache.lab.solutions.nb03 import make_two_instances", "ex1-check", ("PASS",)),
    # Exercise 2: warm the 50 most requested keys.
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "warm_top_50()")),
    (
        _warm(
            "first_50 = list(dict.fromkeys(access_log))[:50]\n"
            "warmer = CacheWarmer(cache, progress=False)\n"
            "return await warmer.warm(first_50, load_policy, ttl=plan.ttl, "
            "memory_ttl=plan.memory_ttl)"
        ),
        "ex2-check",
        (
            "FAIL",
            "18 of the 50 most requested are missing",
            "those are the first 50 keys the log names",
        ),
    ),
    (  # the cache's own TTLs: 300 s in Redis, 60 s in memory
        _warm(
            "return await CacheWarmer(cache, progress=False).warm_top(access_log, 50, load_policy)"
        ),
        "ex2-check",
        ("FAIL", "Redis TTLs are 300-300 s; plan.ttl is 1800 s", "plan.memory_ttl is 300 s"),
    ),
    (
        _warm(
            "return await CacheWarmer(cache, progress=False).warm_top(\n"
            "    access_log, 50, load_policy, ttl=plan.memory_ttl, memory_ttl=plan.ttl)"
        ),
        "ex2-check",
        ("FAIL", "Redis TTLs are 300-300 s; plan.ttl is 1800 s"),
    ),
    (
        _warm(
            "return await CacheWarmer(cache, progress=False).warm_top(\n"
            "    access_log, 50, load_policy, ttl=plan.ttl)"
        ),
        "ex2-check",
        ("FAIL", "L1 copies live [60.0] s; plan.memory_ttl is 300 s"),
    ),
    (  # every lambda sees the loop's last key
        _warm(
            "top = [key for key, _ in Counter(access_log).most_common(50)]\n"
            "loaders = {key: lambda: load_policy(key) for key in top}\n"
            "return await CacheWarmer(cache, progress=False).warm(\n"
            "    loaders, ttl=plan.ttl, memory_ttl=plan.memory_ttl)"
        ),
        "ex2-check",
        (
            "FAIL",
            "load_policy was called 50 times, with 1 distinct key(s)",
            "49 keys hold another value than load_policy(key) gives",
        ),
    ),
    (
        _warm(
            "await CacheWarmer(cache, progress=False).warm_top(\n"
            "    access_log, 50, load_policy, ttl=plan.ttl, memory_ttl=plan.memory_ttl)"
        ),
        "ex2-check",
        ("FAIL", "return the WarmResult of the warm; got None"),
    ),
    ("from labcache.lab.solutions.nb03 import warm_top_50", "ex2-check", ("PASS",)),
]

CLEANUP = (
    "from labcache.aside import unlink_matching\n"
    "await cache.close()\n"
    "await unlink_matching(redis, NS + '*')"
)
