"""The seeded generator of the course's CSVs (``python -m labcache.lab.data`` writes them).

One `random.Random(seed)` draws every row, so the same seed always gives the same bytes: the
committed CSVs in ``data/`` are what `write_csvs()` writes, and every notebook output repeats.
"""

from __future__ import annotations

import csv
import random
from datetime import date
from pathlib import Path

from labcache.lab.schema import SCHEMA, Row

SEED = 10
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
POLICY_IDS = range(10000, 15000)  # includes the lab's "12345"
CUSTOMER_IDS = range(60000, 62000)
AGENT_IDS = [f"A{n:03d}" for n in range(1, 201)]

_FIRST = ("Ana", "Ben", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
          "Kira", "Liam", "Maya", "Noor", "Omar", "Priya", "Quinn", "Rosa")  # fmt: skip
_LAST = ("Adams", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Haddad", "Ito", "Kim",
         "Lopez", "Murphy", "Nguyen", "Okafor", "Patel", "Rossi", "Silva", "Vogel")  # fmt: skip
_STREETS = ("Oak", "Maple", "Cedar", "Pine", "Elm", "Lake", "Hill", "Park", "River", "Main")
_CITIES = (("Austin", "TX", "787"), ("Denver", "CO", "802"), ("Portland", "OR", "972"),
           ("Columbus", "OH", "432"), ("Boston", "MA", "021"), ("Newark", "NJ", "071"),
           ("Phoenix", "AZ", "850"), ("Raleigh", "NC", "276"), ("Tampa", "FL", "336"))  # fmt: skip
# Per policy type: premium range, deductibles, liability, collision, comprehensive (or face value).
_PLANS = {
    "Auto": ((600, 2400), (250, 500, 1000), (100_000, 300_000, 500_000), (25_000, 50_000, 100_000),
             (10_000, 25_000, 50_000)),
    "Home": ((800, 3500), (500, 1000, 2500), (100_000, 300_000, 500_000), (0,),
             (150_000, 300_000, 600_000)),
    "Life": ((200, 1500), (0,), (0,), (0,), (100_000, 250_000, 500_000, 1_000_000)),
}  # fmt: skip
# The quote rating table: a base rate, exact-match factors and banded ones (the band with the
# highest lower bound <= the value applies). It ships as quote_rates.csv for students to read.
RATES: dict[str, dict[str, float]] = {
    "base": {"annual": 800.0},
    "age": {"16": 1.6, "21": 1.35, "25": 1.1, "30": 1.0, "50": 0.95, "65": 1.15, "75": 1.35},
    "vehicle": {"sedan": 1.0, "suv": 1.15, "truck": 1.2, "minivan": 0.95, "electric": 1.1,
                "sports": 2.0, "motorcycle": 1.4},
    "deductible": {"0": 1.25, "250": 1.1, "500": 1.0, "1000": 0.9, "2500": 0.8},
    "coverage": {"basic": 0.8, "standard": 1.0, "full": 1.3},
    "risk": {"0": 0.9, "40": 1.0, "70": 1.2, "90": 1.45},
}  # fmt: skip
BANDED = {"age", "deductible", "risk"}


def generate(seed: int = SEED) -> dict[str, list[Row]]:
    """Build every table from one seeded RNG: the same seed always gives the same rows."""
    rng = random.Random(seed)
    customers: list[Row] = []
    for cid in CUSTOMER_IDS:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, state, zip3 = rng.choice(_CITIES)
        customers.append({
            "id": str(cid), "name": f"{first} {last}",
            "email": f"{first}.{last}.{cid}@example.com".lower(),
            "phone": f"555-{rng.randrange(100, 1000)}-{rng.randrange(10000):04d}",
            "street": f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)} St", "city": city,
            "state": state, "zip": f"{zip3}{rng.randrange(100):02d}",
            "risk_score": rng.randrange(100), "version": 1,
        })  # fmt: skip
    agent_weights = [rng.uniform(0.5, 3.0) for _ in AGENT_IDS]  # some agents sell more
    owners = [str(c) for c in CUSTOMER_IDS]  # every customer holds at least one policy
    owners += [str(rng.choice(CUSTOMER_IDS)) for _ in range(len(POLICY_IDS) - len(owners))]
    rng.shuffle(owners)
    risk = {c["id"]: c["risk_score"] for c in customers}
    policies: list[Row] = []
    for pid, owner in zip(POLICY_IDS, owners, strict=True):
        kind = rng.choices(("Auto", "Home", "Life"), weights=(55, 30, 15))[0]
        start = date(2024, rng.randrange(1, 13), rng.randrange(1, 29))  # day <= 28: no Feb 29
        years = rng.choice((10, 20, 30)) if kind == "Life" else 1
        (low, high), deductibles, liability, collision, comprehensive = _PLANS[kind]
        policies.append({
            "id": str(pid), "number": f"POL-{pid}", "customer_id": owner,
            "agent_id": rng.choices(AGENT_IDS, weights=agent_weights)[0], "type": kind,
            "premium": round(rng.uniform(low, high) * (0.8 + risk[owner] / 250), 2),
            "deductible": rng.choice(deductibles), "coverage_liability": rng.choice(liability),
            "coverage_collision": rng.choice(collision),
            "coverage_comprehensive": rng.choice(comprehensive),
            "effective_date": start.isoformat(),
            "expiration_date": start.replace(year=start.year + years).isoformat(), "version": 1,
        })  # fmt: skip
    agents: list[Row] = []
    for aid in AGENT_IDS:
        book = [p["premium"] for p in policies if p["agent_id"] == aid]
        agents.append({
            "id": aid, "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "sales_this_month": rng.randrange(51), "revenue": round(sum(book), 2),
            "customer_satisfaction": round(rng.uniform(3.5, 5.0), 2),
            "policies_managed": len(book),
        })  # fmt: skip
    rates = [{"factor": f, "key": k, "value": v} for f, t in RATES.items() for k, v in t.items()]
    return {"customers": customers, "agents": agents, "policies": policies, "quote_rates": rates}


def write_csvs(directory: str | Path = DATA_DIR, seed: int = SEED) -> dict[str, Path]:
    """Write one CSV per table; floats get two decimals and lines "\\n", so bytes never vary."""
    paths = {table: Path(directory) / f"{table}.csv" for table in SCHEMA}
    Path(directory).mkdir(parents=True, exist_ok=True)
    for table, rows in generate(seed).items():
        with paths[table].open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(SCHEMA[table])
            for row in rows:
                values = (row[column] for column in SCHEMA[table])
                writer.writerow(f"{v:.2f}" if isinstance(v, float) else v for v in values)
    return paths
