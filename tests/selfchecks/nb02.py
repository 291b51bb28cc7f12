"""Notebook 02's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
"""

from __future__ import annotations

from tests.selfchecks import Case

CASES: list[Case] = [
    (
        "async def get_customer_cached(customer_id):\n"
        "    return await db.get_customer(customer_id)",
        "ex1-check",
        ("FAIL", "called the database 2 times", "is not in Redis"),
    ),
    (
        "async def get_customer_cached(customer_id):\n"
        "    return await cache.get(f'customer:{customer_id}',\n"
        "                           lambda: db.get_customer(customer_id), ttl=60)",
        "ex1-check",
        ("FAIL", "the TTL is 60 s"),
    ),
    ("ex1-answer", "ex1-check", ("PASS",)),
    (
        "async def change_email(customer_id, email):\n"
        "    await db.update_customer(customer_id, email=email)",
        "ex2-check",
        ("FAIL", "still serves the old copy"),
    ),
    ("ex2-answer", "ex2-check", ("PASS",)),
]


CLEANUP = "await cache.invalidate_pattern('*')"
