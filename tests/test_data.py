"""The course's "database": seeded CSVs, latency, call counts, updates, quotes and outages."""

from __future__ import annotations

import ast
import asyncio
import csv
import json
import random
from collections import Counter
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from labcache.lab import data, generator, schema
from labcache.lab.data import (
    DATA_DIR,
    InsuranceDB,
    Latency,
    SourceUnavailable,
    generate,
    normalize_quote_request,
    write_csvs,
)

LAB_QUOTE = {"driver_age": 25, "vehicle_type": "sedan", "deductible": 500, "coverage": "full"}


class RecordingSleep:
    """Stands in for asyncio.sleep: records each requested delay instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def db() -> InsuranceDB:
    return InsuranceDB(latency=Latency.zero())


def read_csv(name: str) -> list[dict[str, str]]:
    with (DATA_DIR / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- the generator and the committed CSVs ------------------------------------------------------


def test_regenerating_reproduces_the_committed_csvs_byte_for_byte(tmp_path: Path) -> None:
    written = write_csvs(tmp_path)
    assert sorted(p.name for p in written.values()) == sorted(
        p.name for p in DATA_DIR.glob("*.csv")
    )
    for path in written.values():
        assert path.read_bytes() == (DATA_DIR / path.name).read_bytes(), path.name
        assert b"\r" not in path.read_bytes()


def test_generator_is_pure_and_ignores_the_global_random_state() -> None:
    random.seed(1)
    first = generate()
    random.seed(2)
    random.random()
    assert generate() == first
    assert generate(seed=11) != first


@pytest.mark.parametrize("module", [data, generator, schema], ids=lambda m: m.__name__)
def test_module_never_uses_unseeded_randomness_or_the_clock(module: ModuleType) -> None:
    assert module.__file__ is not None
    source = Path(module.__file__).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "random":
                assert node.attr == "Random", f"random.{node.attr} is unseeded"
            assert (node.value.id, node.attr) not in {
                ("datetime", "now"),
                ("date", "today"),
                ("time", "time"),
                ("time", "monotonic"),
            }
    assert "uuid" not in source


def test_row_counts_and_id_ranges() -> None:
    customers, policies, agents = (
        read_csv(f"{t}.csv") for t in ("customers", "policies", "agents")
    )
    assert len(customers) == 2000
    assert len(policies) == 5000
    assert len(agents) == 200
    assert [c["id"] for c in customers] == [str(n) for n in range(60000, 62000)]
    assert [p["id"] for p in policies] == [str(n) for n in range(10000, 15000)]
    assert [a["id"] for a in agents] == [f"A{n:03d}" for n in range(1, 201)]
    assert {"12345", "12346", "12347", "12348", "12349"} <= {p["id"] for p in policies}


def test_csvs_are_consistent_with_each_other() -> None:
    customers = {c["id"] for c in read_csv("customers.csv")}
    policies = read_csv("policies.csv")
    agents = read_csv("agents.csv")
    assert {p["customer_id"] for p in policies} == customers  # everyone holds a policy
    per_agent = Counter(p["agent_id"] for p in policies)
    for agent in agents:
        assert int(agent["policies_managed"]) == per_agent[agent["id"]]
        assert 3.5 <= float(agent["customer_satisfaction"]) <= 5.0
    for policy in policies:
        assert policy["number"] == f"POL-{policy['id']}"
        assert policy["type"] in {"Auto", "Home", "Life"}
        assert date.fromisoformat(policy["effective_date"]) < date.fromisoformat(
            policy["expiration_date"]
        )
    assert {p["type"] for p in policies} == {"Auto", "Home", "Life"}


def test_missing_data_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"python -m labcache\.lab\.data"):
        InsuranceDB(tmp_path)


# -- reads ---------------------------------------------------------------------------------------


async def test_get_policy_has_the_lab_shape(db: InsuranceDB) -> None:
    policy = await db.get_policy("12345")
    assert policy is not None
    assert set(policy) == {
        "id", "number", "holder", "type", "premium", "deductible", "coverage",
        "effective_date", "expiration_date", "customer_id", "agent_id", "version",
    }  # fmt: skip
    assert policy["id"] == "12345" and policy["number"] == "POL-12345"
    assert set(policy["coverage"]) == {"liability", "collision", "comprehensive"}
    assert isinstance(policy["premium"], float) and policy["version"] == 1
    date.fromisoformat(policy["effective_date"])
    customer = await db.get_customer(policy["customer_id"])
    assert customer is not None and policy["holder"] == customer["name"]
    assert json.loads(json.dumps(policy)) == policy
    assert await db.get_policy(12345) == policy  # the lab passes numbers too


async def test_get_customer_has_the_lab_shape(db: InsuranceDB) -> None:
    customer = await db.get_customer("60000")
    assert customer is not None
    assert set(customer) == {"id", "name", "email", "phone", "address", "risk_score", "version"}
    assert set(customer["address"]) == {"street", "city", "state", "zip"}
    assert len(customer["address"]["zip"]) == 5 and customer["address"]["zip"].isdigit()
    assert 0 <= customer["risk_score"] < 100
    # Seeded, not random per call: the same answer every time (the lab's Math.random() mistake).
    assert await db.get_customer("60000") == customer
    assert json.loads(json.dumps(customer)) == customer


async def test_get_agent_stats_has_the_lab_shape(db: InsuranceDB) -> None:
    stats = await db.get_agent_stats("A001")
    assert stats is not None
    assert set(stats) == {
        "id", "name", "sales_this_month", "revenue", "customer_satisfaction", "policies_managed",
    }  # fmt: skip
    assert stats["policies_managed"] > 0 and stats["revenue"] > 0
    assert await db.get_agent_stats("A001") == stats


async def test_unknown_ids_give_none(db: InsuranceDB) -> None:
    assert await db.get_policy("99999") is None
    assert await db.get_customer("67890") is None
    assert await db.get_agent_stats("A999") is None
    assert await db.policies_of_customer("67890") == []


async def test_policies_of_customer_matches_the_csv(db: InsuranceDB) -> None:
    expected = sorted(p["id"] for p in read_csv("policies.csv") if p["customer_id"] == "60000")
    assert await db.policies_of_customer("60000") == expected
    assert expected
    for policy_id in expected:
        policy = await db.get_policy(policy_id)
        assert policy is not None and policy["customer_id"] == "60000"


def test_id_lists_are_sorted_strings(db: InsuranceDB) -> None:
    assert db.policy_ids() == [str(n) for n in range(10000, 15000)]
    assert db.customer_ids() == [str(n) for n in range(60000, 62000)]
    assert db.agent_ids() == [f"A{n:03d}" for n in range(1, 201)]
    assert db.total_calls == 0  # listing keys is not a source call


# -- counting ------------------------------------------------------------------------------------


async def test_every_call_is_counted_exactly_once(db: InsuranceDB) -> None:
    await db.get_policy("12345")
    await db.get_policy("99999")
    await db.get_customer("60001")
    await db.get_agent_stats("A002")
    await db.calculate_quote(LAB_QUOTE)
    await db.policies_of_customer("60001")
    await db.update_customer("60001", phone="555-000-0000")
    with pytest.raises(ValueError):
        await db.update_policy("12345", colour="red")  # failures count too
    assert db.calls == Counter({
        "get_policy": 2, "get_customer": 1, "get_agent_stats": 1, "calculate_quote": 1,
        "policies_of_customer": 1, "update_customer": 1, "update_policy": 1,
    })  # fmt: skip
    assert db.total_calls == 8
    db.reset_calls()
    assert db.total_calls == 0 and not db.calls


async def test_concurrent_calls_are_all_counted(db: InsuranceDB) -> None:
    ids = db.policy_ids()[:50]
    policies = await asyncio.gather(*(db.get_policy(i) for i in ids))
    assert [p["id"] for p in policies if p] == ids
    assert db.calls["get_policy"] == 50


# -- latency -------------------------------------------------------------------------------------


async def test_each_call_sleeps_its_latency() -> None:
    sleep = RecordingSleep()
    db = InsuranceDB(sleep=sleep)
    await db.get_policy("12345")
    await db.get_customer("60000")
    await db.calculate_quote(LAB_QUOTE)
    await db.get_agent_stats("A001")
    await db.update_policy("12345", premium=1000)
    assert sleep.delays == [0.100, 0.080, 0.200, 0.150, 0.050]


async def test_latency_scale_and_slow() -> None:
    sleep = RecordingSleep()
    db = InsuranceDB(latency_scale=0.1, sleep=sleep)
    await db.get_policy("12345")
    with db.slow(0.5), db.slow(0.25):
        await db.get_policy("12345")
    await db.get_policy("12345")
    assert sleep.delays == pytest.approx([0.01, 0.76, 0.01])
    assert Latency.zero() == Latency(0, 0, 0, 0, 0)


async def test_real_sleep_takes_about_the_latency() -> None:
    db = InsuranceDB(latency=Latency(policy=0.05))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await db.get_policy("12345")
    assert loop.time() - start >= 0.045


# -- writes --------------------------------------------------------------------------------------


async def test_update_policy_bumps_version_and_persists(db: InsuranceDB) -> None:
    before = await db.get_policy("12345")
    assert before is not None
    after = await db.update_policy("12345", premium=999.5, coverage={"liability": 750_000})
    assert after["version"] == before["version"] + 1
    assert after["premium"] == 999.5
    assert after["coverage"] == {**before["coverage"], "liability": 750_000}
    assert await db.get_policy("12345") == after
    again = await db.update_policy(12345, deductible=2500)
    assert again["version"] == before["version"] + 2 and again["premium"] == 999.5


async def test_update_customer_bumps_version_and_renames_the_holder(db: InsuranceDB) -> None:
    customer = await db.get_customer("60000")
    assert customer is not None
    policy_id = (await db.policies_of_customer("60000"))[0]
    updated = await db.update_customer("60000", name="Zed Example", address={"city": "Reno"})
    assert updated["version"] == customer["version"] + 1
    assert updated["address"] == {**customer["address"], "city": "Reno"}
    assert await db.get_customer("60000") == updated
    # Policies join their holder, so a customer write makes cached policies stale (cascade).
    policy = await db.get_policy(policy_id)
    assert policy is not None and policy["holder"] == "Zed Example"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "cannot update"),
        ({"version": 7}, "cannot update"),
        ({"id": "1"}, "cannot update"),
        ({}, "cannot update"),
        ({"premium": "cheap"}, "premium must be float"),
        ({"deductible": True}, "deductible must be int"),
        ({"coverage": {"flood": 1}}, "coverage must be a mapping"),
        ({"customer_id": "67890"}, "does not exist"),
        ({"agent_id": "A999"}, "does not exist"),
    ],
)
async def test_bad_policy_updates_raise_and_change_nothing(
    db: InsuranceDB, changes: dict[str, Any], message: str
) -> None:
    before = await db.get_policy("12345")
    with pytest.raises(ValueError, match=message):
        await db.update_policy("12345", **changes)
    assert await db.get_policy("12345") == before


async def test_unknown_ids_on_update_raise_key_error(db: InsuranceDB) -> None:
    with pytest.raises(KeyError, match="99999"):
        await db.update_policy("99999", premium=1.0)
    with pytest.raises(KeyError, match="67890"):
        await db.update_customer("67890", name="Nobody")
    with pytest.raises(ValueError, match="cannot update"):
        await db.update_customer("60000", risk=3)


async def test_a_file_database_keeps_writes_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "insurance.sqlite"
    first = InsuranceDB(database=path, latency=Latency.zero())
    await first.update_policy("12345", premium=1.0)
    first.close()
    second = InsuranceDB(database=path, latency=Latency.zero())
    policy = await second.get_policy("12345")
    assert policy is not None and policy["version"] == 2 and policy["premium"] == 1.0
    second.close()


# -- quotes --------------------------------------------------------------------------------------


async def test_quote_is_deterministic_and_json_friendly(db: InsuranceDB) -> None:
    quote = await db.calculate_quote(LAB_QUOTE)
    assert quote == await db.calculate_quote(dict(LAB_QUOTE))
    assert quote["quote_id"].startswith("Q-") and len(quote["quote_id"]) == 18
    # 800 base x 1.1 (age 25) x 1.0 (sedan) x 1.0 (deductible 500) x 1.3 (full) x 1.0 (no customer)
    assert quote["premium"] == 1144.0
    assert json.loads(json.dumps(quote)) == quote
    assert "validUntil" not in quote and "calculated_at" not in quote  # no clock in the data


async def test_quote_ignores_field_order_and_spelled_out_defaults(db: InsuranceDB) -> None:
    reordered = dict(reversed(list(LAB_QUOTE.items())))
    assert list(reordered) != list(LAB_QUOTE)
    a = await db.calculate_quote(LAB_QUOTE)
    b = await db.calculate_quote(reordered)
    assert a == b
    short = await db.calculate_quote({"vehicle_type": "SUV", "driver_age": 40})
    spelled = await db.calculate_quote(
        {"driver_age": 40, "vehicle_type": "suv", "deductible": 500, "coverage": "standard"}
    )
    assert short == spelled
    assert normalize_quote_request({"vehicle_type": "suv", "driver_age": 40})["deductible"] == 500


async def test_quote_depends_on_its_inputs(db: InsuranceDB) -> None:
    base = await db.calculate_quote(LAB_QUOTE)
    young = await db.calculate_quote({**LAB_QUOTE, "driver_age": 19})
    sports = await db.calculate_quote({**LAB_QUOTE, "vehicle_type": "sports"})
    assert young["premium"] > base["premium"] and sports["premium"] == pytest.approx(
        base["premium"] * 2
    )
    assert len({base["quote_id"], young["quote_id"], sports["quote_id"]}) == 3
    customer = await db.get_customer("60000")
    assert customer is not None
    personal = await db.calculate_quote({**LAB_QUOTE, "customer_id": 60000})
    assert personal["customer_id"] == "60000" and personal["quote_id"] != base["quote_id"]
    assert personal["factors"]["risk"] == _risk_factor(customer["risk_score"])


def _risk_factor(score: int) -> float:
    bands = {int(k): v for k, v in generator.RATES["risk"].items()}
    return bands[max(b for b in bands if b <= score)]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({**LAB_QUOTE, "vehicle_type": "hovercraft"}, ValueError),
        ({**LAB_QUOTE, "coverage": "everything"}, ValueError),
        ({**LAB_QUOTE, "driver_age": 12}, ValueError),
        ({**LAB_QUOTE, "driverAge": 25}, ValueError),
        ({"vehicle_type": "sedan"}, ValueError),
        ({**LAB_QUOTE, "customer_id": "67890"}, KeyError),
    ],
)
async def test_bad_quote_requests_raise(
    db: InsuranceDB, request_: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await db.calculate_quote(request_)
    assert db.calls["calculate_quote"] == 1


# -- outages -------------------------------------------------------------------------------------


async def test_outage_makes_every_call_fail_after_its_latency() -> None:
    sleep = RecordingSleep()
    db = InsuranceDB(sleep=sleep)
    with db.outage():
        for call in (
            db.get_policy("12345"),
            db.get_customer("60000"),
            db.get_agent_stats("A001"),
            db.calculate_quote(LAB_QUOTE),
            db.policies_of_customer("60000"),
            db.update_policy("12345", premium=1.0),
            db.update_customer("60000", name="X"),
        ):
            with pytest.raises(SourceUnavailable):
                await call
    assert issubclass(SourceUnavailable, ConnectionError)
    assert db.total_calls == 7 and len(sleep.delays) == 7  # each waited, then failed
    policy = await db.get_policy("12345")
    assert policy is not None and policy["version"] == 1  # the failed write changed nothing


async def test_outage_with_a_custom_exception_and_nesting(db: InsuranceDB) -> None:
    with db.outage(TimeoutError("source timed out")):
        with pytest.raises(TimeoutError, match="timed out"):
            await db.get_policy("12345")
        with db.outage(), pytest.raises(SourceUnavailable):
            await db.get_policy("12345")
        with pytest.raises(TimeoutError):
            await db.get_policy("12345")
    assert await db.get_policy("12345") is not None
