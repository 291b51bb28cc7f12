"""Notebook 02's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
Exercise 2's check stages a reader between the student's two steps (`ReaderBetweenSteps`), so
the wrong order, invalidate then update, fails although the function alone looks right.
"""

from __future__ import annotations

from tests.selfchecks import Case


def cached(body: str) -> str:
    """A student's `get_customer_cached` whose body is `body`."""
    return f"async def get_customer_cached(cache, db, customer_id, ttl):\n    {body}"


def change(*body: str) -> str:
    """A student's `change_email` whose body is these lines."""
    return "async def change_email(cache, db, customer_id, email):\n" + "".join(
        f"    {b}\n" for b in body
    )


UPDATE = "await db.update_customer(customer_id, email=email)"
INVALIDATE = "await cache.invalidate(f'customer:{customer_id}')"

CASES: list[Case] = [
    # -- exercise 1: cache-aside read of a customer
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "get_customer_cached()")),
    (
        cached("return await db.get_customer(customer_id)"),
        "ex1-check",
        ("FAIL", "called the database 2 times", "is not in Redis"),
    ),
    (
        cached(
            "return await cache.get(f'customer:{customer_id}',\n"
            "                           lambda: db.get_customer(customer_id), ttl=60)"
        ),
        "ex1-check",
        ("FAIL", "the TTL is 60 s"),
    ),
    (  # no ttl: the cache's default (DEFAULT_TTL, 300 s), not CUSTOMER_CACHE_TTL
        cached(
            "return await cache.get(f'customer:{customer_id}',\n"
            "                           lambda: db.get_customer(customer_id))"
        ),
        "ex1-check",
        ("FAIL", "the TTL is 300 s"),
    ),
    (
        cached(
            "return await cache.get(f'customer{customer_id}',\n"
            "                           lambda: db.get_customer(customer_id), ttl=ttl)"
        ),
        "ex1-check",
        ("FAIL", "is not in Redis: use the key 'customer:60001'"),
    ),
    ("from labcache.lab.solutions.nb02 import get_customer_cached", "ex1-check", ("PASS",)),
    # -- exercise 2: update the database, then invalidate
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "change_email()")),
    (change(UPDATE), "ex2-check", ("FAIL", "still serves the old copy", "after the update")),
    (  # the known weak spot: the wrong order, which a reader in between exposes
        change(INVALIDATE, UPDATE),
        "ex2-check",
        ("FAIL", "you invalidated BEFORE updating", "Update the database first"),
    ),
    (change(INVALIDATE), "ex2-check", ("FAIL", "saw 0 updates", "the next read returned")),
    (
        change(UPDATE, "await cache.invalidate(customer_id)"),
        "ex2-check",
        ("FAIL", "still serves the old copy"),
    ),
    (  # the new row written into the cache instead of deleting the entry
        change(
            "row = await db.update_customer(customer_id, email=email)",
            "await cache.set(f'customer:{customer_id}', row)",
        ),
        "ex2-check",
        ("FAIL", "expected 1 (a miss)"),
    ),
    (  # the notebook's own db, not the one passed in: the check's reader never runs
        "real_db = db\n"
        + change("await real_db.update_customer(customer_id, email=email)", INVALIDATE),
        "ex2-check",
        ("FAIL", "saw 0 updates"),
    ),
    ("from labcache.lab.solutions.nb02 import change_email", "ex2-check", ("PASS",)),
]


CLEANUP = "await cache.invalidate_pattern('*')"
