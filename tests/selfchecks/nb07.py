"""Notebook 07's exercise checks: each case is (answer cell id or code, check cell id, fragments).

Replace the cases when the exercises change; `tests/test_notebook_selfchecks.py` runs them.
"""

from __future__ import annotations

from tests.selfchecks import Case

# The checks call labcache.lab.checks.nb07 with `cache`, `db`, `setup_db` and `peek` (set-up);
# the helpers cell (`db_premium`, `warm`) is run too, as a student's kernel would have it.
SETUP = ["imports", "connect", "helpers"]

RENAME = "async def rename_customer(wt, cid, new_name):\n"
DELIVER = "async def deliver_out_of_order(redis, ordered, shuffled):\n"

CASES: list[Case] = [
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "rename_customer()")),
    (  # the database only: the cache keeps the old name, the policies the old holder
        RENAME + "    await wt.db.update_customer(cid, name=new_name)",
        "ex1-check",
        ("FAIL", "the cache still serves customer 60010", "7 of 7 cached policies"),
    ),
    (  # the policies forgotten: the customer is right, every policy shows the old holder
        RENAME + "    return await wt.update_customer(cid, name=new_name)",
        "ex1-check",
        ("FAIL", "7 of 7 cached policies of customer 60010 still show the holder"),
    ),
    (  # tags= (the new entry's tags) mistaken for drop_tags=
        RENAME + "    tags = [f'customer:{cid}']\n"
        "    return await wt.update_customer(cid, name=new_name, tags=tags)",
        "ex1-check",
        ("FAIL", "still show the holder"),
    ),
    (  # a pattern instead of the tag: another customer's policies go too
        RENAME + "    await wt.update_customer(cid, name=new_name)\n"
        "    await wt.cache.invalidate_pattern('policy:*')",
        "ex1-check",
        ("FAIL", "3 of customer 60011's 3 cached policies were dropped too"),
    ),
    (  # cache-aside instead of write-through: the next read of the customer pays the database
        RENAME + "    await wt.db.update_customer(cid, name=new_name)\n"
        "    await wt.cache.invalidate(f'customer:{cid}')\n"
        "    await wt.cache.invalidate_tag(f'customer:{cid}')",
        "ex1-check",
        ("FAIL", "reading the customer went to the database"),
    ),
    ("from labcache.lab.solutions.nb07 import rename_customer", "ex1-check", ("PASS",)),
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "deliver_out_of_order()")),
    (  # copied in the original order: nothing is stale
        DELIVER + "    for _, fields in await redis.xrange(ordered):\n"
        "        await redis.xadd(shuffled, fields)\n"
        "    await redis.delete(ordered)",
        "ex2-check",
        ("FAIL", "expected [222.0, 111.0]", "applied 2 and skipped 0 as stale"),
    ),
    (  # a rename keeps the order too
        DELIVER + "    await redis.rename(ordered, shuffled)",
        "ex2-check",
        ("FAIL", "holds the premiums [111.0, 222.0]"),
    ),
    (  # newest first, but the original stream left behind
        DELIVER + "    for _, fields in reversed(await redis.xrange(ordered)):\n"
        "        await redis.xadd(shuffled, fields)",
        "ex2-check",
        ("FAIL", "__exercise__ still exists"),
    ),
    (  # the original ids kept: a stream refuses an id smaller than its last one
        DELIVER + "    for entry_id, fields in reversed(await redis.xrange(ordered)):\n"
        "        await redis.xadd(shuffled, fields, id=entry_id)\n"
        "    await redis.delete(ordered)",
        "ex2-check",
        ("FAIL", "ResponseError"),
    ),
    ("from labcache.lab.solutions.nb07 import deliver_out_of_order", "ex2-check", ("PASS",)),
]

CLEANUP = (
    "await cache.close()\n"
    "await unlink_matching(redis, NS + '*')\n"
    "await redis.aclose()\n"
    "shutil.rmtree(workdir)"
)
