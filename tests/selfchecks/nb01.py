"""Notebook 01's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
Exercise 2's check counts round trips on a client of its own, never timings: the 100-awaits
answer must fail however fast the machine is.
"""

from __future__ import annotations

from tests.selfchecks import Case


def greeting(body: str) -> str:
    """A student's `store_greeting` whose body is `body`."""
    return f"async def store_greeting(redis, key):\n    {body}"


def pipelined(*body: str) -> str:
    """A student's `write_pipelined` whose body is these lines."""
    return "async def write_pipelined(redis, keys, ttl):\n" + "".join(f"    {b}\n" for b in body)


CASES: list[Case] = [
    # -- exercise 1: a key that expires within 30 s
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "store_greeting()")),
    (greeting("await redis.set(key, 'hi')"), "ex1-check", ("FAIL", "never expires")),
    (greeting("await redis.set(key, 'hi', ex=3600)"), "ex1-check", ("FAIL", "3600 s")),
    (greeting("await redis.set(key, 'hi', ex=30_000)"), "ex1-check", ("FAIL", "30000 s")),
    (
        greeting("await redis.rpush(key, 'hi')\n    await redis.expire(key, 20)"),
        "ex1-check",
        ("FAIL", "holds a list"),
    ),
    (greeting("pass"), "ex1-check", ("FAIL", "does not exist")),
    (greeting("await redis.set(key + ':x', 'hi', ex=30)"), "ex1-check", ("FAIL", "does not exist")),
    ("from labcache.lab.solutions.nb01 import store_greeting", "ex1-check", ("PASS",)),
    # -- exercise 2: 100 keys with a TTL in one round trip
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "write_pipelined()")),
    (  # the known weak spot: no pipeline at all, one await per key
        pipelined("for key in keys:", "    await redis.set(key, 'x', ex=ttl)"),
        "ex2-check",
        ("FAIL", "took 100 round trips"),
    ),
    (  # a pipeline, but execute() inside the loop: still one round trip per key
        pipelined(
            "async with redis.pipeline(transaction=False) as pipe:",
            "    for key in keys:",
            "        pipe.set(key, 'x', ex=ttl)",
            "        await pipe.execute()",
        ),
        "ex2-check",
        ("FAIL", "took 100 round trips"),
    ),
    (  # concurrent, not batched: 100 commands, 100 round trips (on up to 100 connections)
        "import asyncio\n"
        + pipelined("await asyncio.gather(*(redis.set(key, 'x', ex=ttl) for key in keys))"),
        "ex2-check",
        ("FAIL", "took 100 round trips"),
    ),
    (  # one MSET, then an EXPIRE per key
        pipelined(
            "await redis.mset({key: 'x' for key in keys})",
            "for key in keys:",
            "    await redis.expire(key, ttl)",
        ),
        "ex2-check",
        ("FAIL", "took 101 round trips"),
    ),
    (
        pipelined(
            "async with redis.pipeline(transaction=False) as pipe:",
            "    for key in keys[:50]:",
            "        pipe.set(key, 'x', ex=ttl)",
            "    await pipe.execute()",
        ),
        "ex2-check",
        ("FAIL", "50 of the 100 keys are not in Redis"),
    ),
    (
        pipelined(
            "async with redis.pipeline(transaction=False) as pipe:",
            "    for key in keys:",
            "        pipe.set(key, 'x')",
            "    await pipe.execute()",
        ),
        "ex2-check",
        ("FAIL", "100 of the keys never expire"),
    ),
    (  # a pipeline on the notebook's own client, not the one the check passed in
        "real_redis = redis\n"
        + pipelined(
            "async with real_redis.pipeline(transaction=False) as pipe:",
            "    for key in keys:",
            "        pipe.set(key, 'x', ex=ttl)",
            "    await pipe.execute()",
        ),
        "ex2-check",
        ("FAIL", "nothing went through the client the check passed in"),
    ),
    (
        "from labcache.lab.solutions.nb01 import write_pipelined",
        "ex2-check",
        ("PASS", "in 1 round"),
    ),
]

CLEANUP = "await unlink_matching(redis, NS + '*')"
