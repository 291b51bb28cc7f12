"""The benchmark runs every scenario (tiny sizes) on the suite's server and checks behaviour.

Only structure and counts are asserted (commands sent, loader calls, L1 size): never a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from labcache.bench import SCENARIOS, main
from labcache.bench.core import median, percentile, set_ratios, timed_row

# The peers call redis-py methods it has deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_statistics_helpers() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert math.isnan(median([]))
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 99) == 99.0
    assert percentile(xs, 100) == 100.0
    rows = [
        timed_row("s", "ref", [2e-6, 2e-6], reference=True),
        timed_row("s", "other", [3e-6, 3e-6]),
    ]
    assert set_ratios(rows) is rows[0]
    assert rows[0].ratio == 1.0
    assert rows[1].ratio == pytest.approx(1.5)
    assert rows[1].ops_per_s == pytest.approx(1 / 3e-6)


@pytest.fixture(scope="module")
def report(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One tiny run of every scenario through the command line, read back from its JSON."""
    out = tmp_path_factory.mktemp("bench")
    code = main(["--url", redis_url, "--plan", "tiny", "--out", str(out)])
    files = sorted(Path(out).glob("bench-tiny-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".csv").exists()
    data: dict[str, object] = json.loads(files[0].read_text())
    data["exit_code"] = code
    return data


def _checks(report: dict[str, object]) -> dict[str, dict[str, object]]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {f"[{c['scenario']}] {c['name']}": c for c in checks}


def test_every_scenario_reports_rows_and_the_run_exits_0(report: dict[str, object]) -> None:
    rows = report["rows"]
    assert isinstance(rows, list)
    scenarios = {row["scenario"].split()[0] for row in rows}
    assert scenarios >= set(SCENARIOS) - {"8"} | {"8a", "8b"}
    for row in rows:
        assert set(row) >= {"scenario", "contender", "median", "p99", "ops_per_s", "ratio",
                            "reference", "target", "met", "status", "notes"}  # fmt: skip
        assert row["status"] in ("ok", "skipped"), row  # nothing errored
        if row["status"] == "skipped":
            assert row["notes"].startswith(("not available", "not measurable")), row
    failed = [name for name, c in _checks(report).items() if not c["passed"]]
    assert failed == []
    assert report["exit_code"] == 0


def test_each_timed_scenario_has_one_reference_row(report: dict[str, object]) -> None:
    rows = report["rows"]
    assert isinstance(rows, list)
    for scenario in {r["scenario"] for r in rows if r["median"] is not None}:
        group = [r for r in rows if r["scenario"] == scenario and r["status"] == "ok"]
        refs = [r for r in group if r["reference"]]
        if scenario.startswith("9"):
            continue  # memory rows are sizes, not a race
        assert len(refs) == 1, scenario
        assert refs[0]["ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "check",
    [
        "[1 L1 hit] 0 Redis commands on an L1 hit (tracking off)",
        "[1 L1 hit] 0 Redis commands on an L1 hit (tracking on)",
        "[2 L2 hit] an L2 hit is exactly one GET",
        "[3 miss + load + set] a MultiLevelCache miss is one GET and one SET",
        "[6 stampede] single-flight: one loader call per burst",
        "[9 memory] L1 stays within its limit",
    ],
)
def test_behavioural_checks_ran_and_passed(report: dict[str, object], check: str) -> None:
    checks = _checks(report)
    assert check in checks, sorted(checks)
    assert checks[check]["passed"], checks[check]


def test_meta_says_what_it_ran_on(report: dict[str, object]) -> None:
    meta = report["meta"]
    assert isinstance(meta, dict)
    assert meta["plan"]["name"] == "tiny"
    assert meta["redis_server"] and meta["python"] and meta["machine"]
    assert "cashews" in meta["versions"]


def test_unknown_scenario_is_refused() -> None:
    assert main(["--only", "42", "--no-files"]) == 2
