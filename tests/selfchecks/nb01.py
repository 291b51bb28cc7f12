"""Notebook 01's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
"""

from __future__ import annotations

from tests.selfchecks import Case

CASES: list[Case] = [
    ("await redis.set(NS + 'exercise:greeting', 'hi')", "ex1-check", ("FAIL", "never expires")),
    ("await redis.set(NS + 'exercise:greeting', 'hi', ex=3600)", "ex1-check", ("FAIL", "3600 s")),
    (
        "await redis.delete(NS + 'exercise:greeting')\n"
        "await redis.rpush(NS + 'exercise:greeting', 'hi')\n"
        "await redis.expire(NS + 'exercise:greeting', 20)",
        "ex1-check",
        ("FAIL", "holds a list"),
    ),
    ("await redis.delete(NS + 'exercise:greeting')", "ex1-check", ("FAIL", "does not exist")),
    ("ex1-answer", "ex1-check", ("PASS",)),
    (
        "await unlink_matching(redis, NS + 'exercise:p:*')\n"
        "for i in range(50):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x', ex=60)\n"
        "one_by_one_ms, pipelined_ms = 10.0, 1.0",
        "ex2-check",
        ("FAIL", "50 of the 100 keys"),
    ),
    (
        "for i in range(100):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x')\n"
        "one_by_one_ms, pipelined_ms = 10.0, 1.0",
        "ex2-check",
        ("FAIL", "never expire"),
    ),
    (
        "for i in range(100):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x', ex=60)\n"
        "one_by_one_ms, pipelined_ms = 10.0, 20.0",
        "ex2-check",
        ("FAIL", "not faster"),
    ),
    ("ex2-answer", "ex2-check", ("PASS",)),
]

CLEANUP = "await unlink_matching(redis, NS + '*')"
