"""The lab's request mix as a seeded stream: which kind of request comes next, for which key.

One `random.Random(seed)` draws the whole sequence, so the same seed gives the same requests
(the lab's test used `Math.random()`, and no two runs matched: mistake 15). Keys are uniform or
Zipf-skewed; the policy/customer/quote mix and the skew can change while a workload runs.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labcache.keys import request_key
from labcache.lab.data import InsuranceDB

LAB_MIX: Mapping[str, float] = {"policy": 0.6, "customer": 0.3, "quote": 0.1}


def lab_quote_requests() -> list[dict[str, Any]]:
    """The lab's quote requests: driver age 20-59, sedan or SUV, deductible 500 (80 in all)."""
    return [
        {"driver_age": age, "vehicle_type": vehicle, "deductible": 500}
        for age in range(20, 60)
        for vehicle in ("sedan", "suv")
    ]


@dataclass(frozen=True)
class Request:
    """One request of the stream: its kind, cache key and the loader's argument."""

    index: int
    kind: str
    key: str
    arg: Any


class RequestStream:
    """An endless, seeded stream: kinds drawn by `mix`, keys uniform (skew 0) or Zipf(skew).

    With Zipf skew `s` the k-th id of a kind's list is drawn with weight 1/k**s, so the first ids
    are the hot ones. `mix` and `skew` can change at any time; the draws stay seeded.
    """

    def __init__(
        self,
        ids: Mapping[str, Sequence[Any]],
        *,
        mix: Mapping[str, float] = LAB_MIX,
        skew: float = 0.0,
        seed: int = 0,
    ) -> None:
        empty = [kind for kind, values in ids.items() if not values]
        if empty:
            raise ValueError(f"no ids to draw for {empty}")
        self.ids = {kind: list(values) for kind, values in ids.items()}
        self.rng = random.Random(seed)
        self._count = itertools.count()
        self._weights: dict[str, list[float]] = {}
        self.mix = mix
        self.skew = skew

    @property
    def mix(self) -> dict[str, float]:
        return dict(self._mix)

    @mix.setter
    def mix(self, mix: Mapping[str, float]) -> None:
        unknown = set(mix) - set(self.ids)
        if unknown:
            raise ValueError(f"mix names kinds without ids: {sorted(unknown)}")
        if any(not (w >= 0 and math.isfinite(w)) for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, not {dict(mix)}")
        self._mix = {kind: float(w) for kind, w in mix.items() if w > 0}
        self._kinds = list(self._mix)
        self._kind_cum = list(itertools.accumulate(self._mix.values()))

    @property
    def skew(self) -> float:
        return self._skew

    @skew.setter
    def skew(self, skew: float) -> None:
        if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0 <= skew < 10:
            raise ValueError(f"skew must be a number in [0, 10) (0 = uniform), not {skew!r}")
        self._skew = float(skew)
        self._weights = {
            kind: list(itertools.accumulate(k**-self._skew for k in range(1, len(values) + 1)))
            for kind, values in self.ids.items()
        }

    def next(self) -> Request:
        rng = self.rng
        kind = rng.choices(self._kinds, cum_weights=self._kind_cum)[0]
        values = self.ids[kind]
        arg = values[rng.choices(range(len(values)), cum_weights=self._weights[kind])[0]]
        key = request_key(kind, arg) if isinstance(arg, Mapping) else f"{kind}:{arg}"
        return Request(next(self._count), kind, key, arg)

    def take(self, n: int) -> list[Request]:
        return [self.next() for _ in range(n)]

    @classmethod
    def from_db(cls, db: InsuranceDB, *, n_keys: int | None = None, **kwargs: Any) -> RequestStream:
        """Policy and customer ids from the database, the lab's quote requests; `n_keys` of each."""
        ids: dict[str, Sequence[Any]] = {
            "policy": db.policy_ids()[:n_keys],
            "customer": db.customer_ids()[:n_keys],
            "quote": lab_quote_requests()[:n_keys],
        }
        return cls(ids, **kwargs)
