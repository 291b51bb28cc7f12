"""The run's output: a table on stdout, and the same rows as JSON and CSV files."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labcache.bench.core import Check, Row, fmt_rate, fmt_ratio, fmt_time

COLUMNS = ("scenario", "contender", "median", "p99", "ops/s", "× ref", "target", "met", "notes")


@dataclass
class Report:
    """Every row and check of one run, with what it ran on."""

    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def ok(self) -> bool:
        """True unless something is functionally broken (timings never fail a run)."""
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rows": [_clean(r.as_dict()) for r in self.rows],
            "checks": [vars(c) for c in self.checks],
        }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: write null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def _cells(row: Row) -> list[str]:
    if row.status != "ok":
        return [row.scenario, row.contender, "-", "-", "-", "-", row.target, "", row.notes]
    met = "" if row.met is None else ("met" if row.met else "MISSED")
    ratio = fmt_ratio(row.ratio) + (" (ref)" if row.reference else "")
    return [
        row.scenario,
        row.contender,
        fmt_time(row.median),
        fmt_time(row.p99),
        fmt_rate(row.ops_per_s),
        ratio,
        row.target,
        met,
        row.notes,
    ]


def table(rows: list[Row]) -> str:
    """A plain-text table, one line per row, a rule between scenarios."""
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    previous = None
    for i, c in enumerate(cells):
        scenario = c[0]
        if i > 1 and scenario != previous:
            lines.append("")
        previous = scenario
        first = "  ".join(
            c[j].rjust(widths[j]) if j in (2, 3, 4, 5) else c[j].ljust(widths[j])
            for j in range(len(widths))
        )
        lines.append(f"{first}  {c[-1]}".rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def checks_text(checks: list[Check]) -> str:
    lines = [f"{'PASS' if c.passed else 'FAIL'}  [{c.scenario}] {c.name}: {c.detail}"
             for c in checks]  # fmt: skip
    failed = sum(not c.passed for c in checks)
    verdict = "all passed" if not failed else f"{failed} FAILED"
    lines.append(f"behavioural checks: {len(checks)} run, {verdict}")
    return "\n".join(lines)


def write_files(report: Report, directory: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>.json` (meta, rows, checks) and `<stem>.csv` (one line per row)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    csv_path = directory / f"{stem}.csv"
    fields = [
        "scenario", "contender", "status", "median_s", "p99_s", "ops_per_s", "ratio",
        "reference", "target", "met", "samples", "notes", "extra",
    ]  # fmt: skip
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for r in report.rows:
            writer.writerow([
                r.scenario, r.contender, r.status, r.median, r.p99, r.ops_per_s, r.ratio,
                r.reference, r.target, r.met, r.samples, r.notes,
                json.dumps(r.extra, default=str) if r.extra else "",
            ])  # fmt: skip
    return json_path, csv_path
