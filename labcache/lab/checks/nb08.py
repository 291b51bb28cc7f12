"""Notebook 08's exercise checks: the verdicts behind its two check cells, which stay short.

`customer_keys_problems` writes and UNLINKs each customer's keys on the notebook's cluster;
`count_problems` reads what a count and the primaries' command counts say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException


async def customer_keys_problems(
    customer_keys: Callable[[str, str], Any],
    redis: RedisCluster,
    namespace: str,
    customers: list[str],
    name_of: Mapping[int, str],
) -> tuple[list[str], Counter[str]]:
    """Exercise 1: for each customer, write the 3 keys `customer_keys(namespace, cid)` names and
    send ONE `UNLINK` of them to the node of the first (the server itself checks the slots).

    Returns the problems found and how many customers landed on each primary (by `name_of`
    its port).
    """
    malformed, refused, short, spread = [], [], [], Counter[str]()
    for cid in customers:
        keys = customer_keys(namespace, cid)
        if (
            not isinstance(keys, (list, tuple))
            or len(set(keys)) != 3
            or not all(isinstance(k, str) and k.startswith(namespace) for k in keys)
        ):
            malformed.append(f"for {cid} it returned {keys!r}")
            continue
        for key in keys:
            await redis.set(key, cid)
        node = redis.get_node_from_key(keys[0])
        assert node is not None, f"no node holds {keys[0]!r}"
        try:
            removed = await redis.execute_command("UNLINK", *keys, target_nodes=node)
        except (ClusterCrossSlotError, RedisClusterException):
            refused.append(keys)
            await redis.unlink(*keys)  # redis-py splits it per slot: the clean-up works
            continue
        if removed != 3:
            short.append(f"{cid}: {removed}")
        spread[name_of[int(node.port)]] += 1
    n, problems = len(customers), []
    if malformed:
        problems.append(
            f"{len(malformed)} of {n} customers: expected 3 distinct keys starting with "
            f"{namespace!r}; {malformed[0]}"
        )
    if refused:
        problems.append(
            f"for {len(refused)} of {n} customers one UNLINK of their 3 keys was refused "
            f"(CROSSSLOT), e.g. {refused[0]}: they are in different slots; give them one hash "
            "tag per customer"
        )
    if short:
        problems.append(
            f"one UNLINK removed fewer than 3 keys for {len(short)} customers ({short[0]})"
        )
    if spread and len(spread) < 3:
        problems.append(
            f"the {sum(spread.values())} customers whose keys share a slot all landed on primary "
            f"{' and '.join(sorted(spread))}: the hash tag must differ per customer, or one node "
            "holds everything"
        )
    return problems, spread


def count_problems(
    found: Any, expected: int, per_node: Mapping[str, int], sent: Mapping[str, int]
) -> list[str]:
    """Exercise 2: what is wrong with counting `found` keys when `expected` match, spread as
    `per_node` (primary name: keys), while the primaries received the commands `sent`."""
    where = ", ".join(f"{n} on {name}" for name, n in sorted(per_node.items()))
    problems = []
    if sent.get("keys", 0):
        problems.append(
            f"the primaries received {sent['keys']} KEYS command(s): KEYS blocks a node while it "
            "walks every key it holds (mistake 2); walk with SCAN"
        )
    if found != expected and found in per_node.values():
        node = next(name for name, n in per_node.items() if n == found)
        problems.append(
            f"counted {found}: only the keys on primary {node} ({where}); walk every primary "
            "(redis.get_primaries())"
        )
    elif isinstance(found, int) and found > expected:
        problems.append(
            f"counted {found}, more than the {expected} there are: SCAN may return a key twice; "
            "count distinct keys"
        )
    elif found != expected:
        problems.append(
            f"counted {found}, expected {expected} ({where}): did you walk every primary, "
            "until each one's cursor came back to 0?"
        )
    return problems
