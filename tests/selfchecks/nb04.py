"""Notebook 04's exercise checks: each case is (answer cell id or code, check cell id, fragments).

`tests/test_notebook_selfchecks.py` runs them after the SETUP cells, in one kernel. The private
redis-server cell (KEYS, 200,000 keys) is not needed here and is not run.
"""

from __future__ import annotations

from tests.selfchecks import Case

SETUP = ["imports", "connect", "lab-data", "warm", "redis-matches"]


def _rule(returns: str) -> str:
    """A wrong on_transfer() that returns `returns`."""
    return (
        f"def on_transfer(*, policy_id, from_customer, to_customer, **_):\n    return {returns}\n"
    )


def _pattern(body: str) -> str:
    """A wrong quote_docs_pattern() whose body is `body` (indented)."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"def quote_docs_pattern(quote_id):\n{lines}\n"


# The lab's holders of policies 12345 and 12346 (seeded data): from_customer and to_customer.
FROM, TO = "60719", "60010"

CASES: list[Case] = [
    # Exercise 1: a rule for policy.transferred.
    ("ex1-answer", "ex1-check", ("NOT ATTEMPTED", "on_transfer()")),
    (  # mistake 16: a pattern over every customer
        _rule(
            "Targets(keys=[f'policy:{policy_id}'], tags=[f'policy:{policy_id}'], "
            "patterns=['customer:*'])"
        ),
        "ex1-check",
        (
            "FAIL",
            f"dropped although still correct (each one a needless database call): "
            f"['customer:{TO}', 'customer:{FROM}']",
            "patterns ['customer:*'] walk the whole keyspace",
        ),
    ),
    (  # one customer's list forgotten
        _rule(
            "Targets(keys=[f'policy:{policy_id}', f'customer:{from_customer}:policies'], "
            "tags=[f'policy:{policy_id}'])"
        ),
        "ex1-check",
        ("FAIL", f"still cached, and now stale: ['customer:{TO}:policies']"),
    ),
    (  # the customers' tags: their profiles and quotes go too
        _rule(
            "Targets(keys=[f'policy:{policy_id}'], tags=[f'policy:{policy_id}', "
            "f'customer:{from_customer}', f'customer:{to_customer}'])"
        ),
        "ex1-check",
        ("FAIL", "dropped although still correct", f"'customer:{FROM}'", "quote:"),
    ),
    (  # the policy's tag forgotten: the summary computed from it stays
        _rule(
            "Targets(keys=[f'policy:{policy_id}', f'customer:{from_customer}:policies', "
            "f'customer:{to_customer}:policies'])"
        ),
        "ex1-check",
        ("FAIL", "still cached, and now stale: ['policies:summary:active']"),
    ),
    (  # exactly the right keys, found by walking the keyspace
        _rule(
            "Targets(keys=[f'policy:{policy_id}'], tags=[f'policy:{policy_id}'], "
            "patterns=[f'customer:{from_customer}:*', f'customer:{to_customer}:*'])"
        ),
        "ex1-check",
        ("FAIL", "walk the whole keyspace"),
    ),
    (
        _rule("{'keys': [f'policy:{policy_id}'], 'tags': [f'policy:{policy_id}']}"),
        "ex1-check",
        ("FAIL", "a rule returns Targets"),
    ),
    ("from labcache.lab.solutions.nb04 import on_transfer", "ex1-check", ("PASS",)),
    # Exercise 2: a glob with the id's glob characters escaped.
    ("ex2-answer", "ex2-check", ("NOT ATTEMPTED", "quote_docs_pattern()")),
    (  # the id pasted in as it is
        _pattern("return f'quote:{quote_id}:*'"),
        "ex2-check",
        (
            "FAIL",
            "id `Q-1*`: pattern `quote:Q-1*:*` matched quote:Q-1*:email, quote:Q-1*:pdf, "
            "quote:Q-10:email",
            "id `Q-[12]`: pattern `quote:Q-[12]:*` matched quote:Q-1:email",
            "id `Q-?`: pattern `quote:Q-?:*`",
            "id `Q-\\`: pattern `quote:Q-\\:*` matched nothing",
            "must match itself: one backslash before it",
        ),
    ),
    (  # only * and ? escaped
        _pattern(
            "escaped = quote_id.replace('*', '\\\\*').replace('?', '\\\\?')\n"
            "return f'quote:{escaped}:*'"
        ),
        "ex2-check",
        ("FAIL", "id `Q-[12]`: pattern `quote:Q-[12]:*`", "id `Q-\\`: pattern `quote:Q-\\:*`"),
    ),
    (  # the backslash escaped last: it doubles the escapes made before
        _pattern(
            "escaped = quote_id\n"
            "for ch in '*?[]\\\\':\n"
            "    escaped = escaped.replace(ch, '\\\\' + ch)\n"
            "return f'quote:{escaped}:*'"
        ),
        "ex2-check",
        ("FAIL", "id `Q-1*`: pattern `quote:Q-1\\\\*:*` matched nothing", "id `Q-[12]`"),
    ),
    (  # no `:` after the id: Q-1 also matches Q-10
        _pattern("return 'quote:' + glob_escape(quote_id) + '*'"),
        "ex2-check",
        ("FAIL", "id `Q-1`: pattern `quote:Q-1*` matched", "quote:Q-10:pdf"),
    ),
    ("from labcache.lab.solutions.nb04 import quote_docs_pattern", "ex2-check", ("PASS",)),
]

CLEANUP = "await cache.close()\nawait unlink_matching(redis, NS + '*')"
