"""The course's answers to notebook 04's exercises: a rule for a transfer, and a safe pattern."""

from __future__ import annotations

from typing import Any

from labcache.invalidation import Targets
from labcache.keys import glob_escape


def on_transfer(
    *, policy_id: object, from_customer: object, to_customer: object, **_: Any
) -> Targets:
    """`policy.transferred`: the policy, what is tagged with it, and both holders' policy lists."""
    return Targets(
        # Exact keys: the policy (it shows its holder) and the two lists the transfer changes.
        keys=[
            f"policy:{policy_id}",
            f"customer:{from_customer}:policies",
            f"customer:{to_customer}:policies",
        ],
        # The tag finds what was computed from the policy (the summary) without naming it.
        # No `customer:*` pattern: it would walk the keyspace and drop every customer (mistake 16),
        # and no `customer:<id>` tag: the customers' own profiles and quotes did not change.
        tags=[f"policy:{policy_id}"],
    )


def quote_docs_pattern(quote_id: str) -> str:
    """A glob for every document of one quote (`quote:<id>:<document>`), whatever the id holds."""
    # glob_escape puts a backslash before each of * ? [ ] \ so the id matches only itself; the
    # `:` after it stops `Q-1` from also matching `Q-10`'s documents.
    return f"quote:{glob_escape(quote_id)}:*"
