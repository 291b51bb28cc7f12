"""The insurance "database" the course caches: seeded CSVs in ``data/`` loaded into SQLite.

Every call sleeps a simulated latency and is counted, so a notebook can show what a cache saves
and a test can assert "the database was asked exactly once". The CSVs come from a seeded
generator (``python -m labcache.lab.data`` writes them): `labcache.lab.generator`; the tables'
columns are `labcache.lab.schema`. Both modules' names are importable from here too.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import math
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from labcache.errors import LabcacheError
from labcache.lab.generator import (
    AGENT_IDS,
    BANDED,
    CUSTOMER_IDS,
    DATA_DIR,
    POLICY_IDS,
    SEED,
    generate,
    write_csvs,
)
from labcache.lab.schema import NESTED, SCHEMA, SQL_TYPES, UPDATABLE, Row
from labcache.writes import merge_changes

__all__ = [
    "AGENT_IDS",
    "CUSTOMER_IDS",
    "DATA_DIR",
    "POLICY_IDS",
    "SCHEMA",
    "SEED",
    "InsuranceDB",
    "Latency",
    "Row",
    "SourceUnavailable",
    "generate",
    "normalize_quote_request",
    "write_csvs",
]


class SourceUnavailable(LabcacheError, ConnectionError):
    """Raised by every call during ``InsuranceDB.outage()``: the source is down."""


@dataclass(frozen=True)
class Latency:
    """Simulated seconds per call, defaulting to the lab's numbers."""

    policy: float = 0.100
    customer: float = 0.080
    quote: float = 0.200
    agent_stats: float = 0.150
    write: float = 0.050

    @classmethod
    def zero(cls) -> Latency:
        """No waiting: for tests, where only the call counts matter."""
        return cls().scaled(0.0)

    def scaled(self, factor: float) -> Latency:
        """Every latency times ``factor`` (0.1 makes a demo ten times faster)."""
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self)})


def normalize_quote_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical request: defaults filled in, so equal requests hash equal in any order."""
    unknown = set(request) - {"driver_age", "vehicle_type", "deductible", "coverage", "customer_id"}
    missing = {"driver_age", "vehicle_type"} - set(request)
    if unknown or missing:
        raise ValueError(f"quote request: unknown {sorted(unknown)}, missing {sorted(missing)}")
    return {
        "driver_age": int(request["driver_age"]),
        "vehicle_type": str(request["vehicle_type"]).lower(),
        "deductible": int(request.get("deductible", 500)),
        "coverage": str(request.get("coverage", "standard")).lower(),
        "customer_id": None if request.get("customer_id") is None else str(request["customer_id"]),
    }


class InsuranceDB:
    """The slow source behind every cache in the course: SQLite plus latency, counts, outages."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        database: str | Path = ":memory:",
        latency: Latency | None = None,
        latency_scale: float = 1.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.latency = (latency or Latency()).scaled(latency_scale)
        self.calls: Counter[str] = Counter()
        self._sleep = sleep
        self._extra: list[float] = []
        self._outages: list[BaseException] = []
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(database), check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._load(Path(data_dir) if data_dir is not None else DATA_DIR)

    def _load(self, directory: Path) -> None:
        """Create the tables and fill them from the CSVs, unless a file database has rows."""
        for table, cols in SCHEMA.items():
            spec = ", ".join(f"{c} {SQL_TYPES[t]}" for c, t in cols.items())
            key = ", PRIMARY KEY (id)" if "id" in cols else ""
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({spec}{key})")
        self._conn.execute("CREATE INDEX IF NOT EXISTS by_customer ON policies (customer_id)")
        # The write-behind ledger: the newest queued-write version applied to each row.
        ledger = "tbl TEXT, id TEXT, version INTEGER, PRIMARY KEY (tbl, id)"
        self._conn.execute(f"CREATE TABLE IF NOT EXISTS applied_writes ({ledger})")
        if self._conn.execute("SELECT 1 FROM policies LIMIT 1").fetchone():
            return  # a file database keeps its writes across processes and restarts
        missing = [f"{t}.csv" for t in SCHEMA if not (directory / f"{t}.csv").is_file()]
        if missing:
            raise FileNotFoundError(
                f"InsuranceDB needs {', '.join(missing)} in {directory}; pass data_dir=... "
                "or regenerate the CSVs with `python -m labcache.lab.data` in the repository"
            )
        for table, cols in SCHEMA.items():
            with (directory / f"{table}.csv").open(newline="", encoding="utf-8") as fh:
                rows = [tuple(cols[c](r[c]) for c in cols) for r in csv.DictReader(fh)]
            with self._conn:
                marks = ", ".join("?" * len(cols))
                self._conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def close(self) -> None:
        """Close the SQLite connection."""
        self._conn.close()

    # -- instrumentation ---------------------------------------------------------------------
    @property
    def total_calls(self) -> int:
        """All source calls so far, of every kind."""
        return sum(self.calls.values())

    def reset_calls(self) -> None:
        """Start counting from zero (e.g. between a cold and a warm run)."""
        self.calls.clear()

    @contextmanager
    def outage(self, exc: BaseException | None = None) -> Iterator[None]:
        """Make every call fail (after its latency) while the block runs."""
        self._outages.append(exc or SourceUnavailable("insurance database unavailable (outage)"))
        try:
            yield
        finally:
            self._outages.pop()

    @contextmanager
    def slow(self, extra_seconds: float) -> Iterator[None]:
        """Add ``extra_seconds`` to every call while the block runs."""
        self._extra.append(extra_seconds)
        try:
            yield
        finally:
            self._extra.pop()

    async def _call(self, name: str, seconds: float) -> None:
        """Count, wait, then fail if an outage is on: what every public call does first."""
        self.calls[name] += 1
        await self._sleep(seconds + sum(self._extra))  # sleep(0) still yields, like real I/O
        if self._outages:
            raise self._outages[-1].with_traceback(None)

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _row(self, table: str, key: str) -> Row | None:
        """One row shaped like the lab's object (nested coverage/address), or None."""
        sql = f"SELECT * FROM {table} WHERE id = ?"
        if table == "policies":  # joined, not copied: renaming a customer renames the holder
            sql = "SELECT p.*, c.name AS holder FROM policies p JOIN customers c "
            sql += "ON c.id = p.customer_id WHERE p.id = ?"
        rows = self._query(sql, key)
        if not rows:
            return None
        flat = dict(rows[0])
        if table not in NESTED:
            return flat
        name, prefix, parts = NESTED[table]
        nested = {part: flat.pop(prefix + part) for part in parts}
        return {**flat, name: nested}

    # -- reads -------------------------------------------------------------------------------
    async def get_policy(self, policy_id: str | int) -> Row | None:
        """One policy with its holder's current name, or None."""
        await self._call("get_policy", self.latency.policy)
        return self._row("policies", str(policy_id))

    async def get_customer(self, customer_id: str | int) -> Row | None:
        """One customer profile, or None."""
        await self._call("get_customer", self.latency.customer)
        return self._row("customers", str(customer_id))

    async def get_agent_stats(self, agent_id: str) -> Row | None:
        """An agent's monthly report (precomputed, like the lab's), or None."""
        await self._call("get_agent_stats", self.latency.agent_stats)
        return self._row("agents", str(agent_id))

    async def policies_of_customer(self, customer_id: str | int) -> list[str]:
        """The ids of a customer's policies, sorted (empty for an unknown customer)."""
        await self._call("policies_of_customer", self.latency.customer)
        sql = "SELECT id FROM policies WHERE customer_id = ? ORDER BY id"
        return [r["id"] for r in self._query(sql, str(customer_id))]

    async def calculate_quote(self, request: Mapping[str, Any]) -> Row:
        """Price a request from the rating table; same request, same quote, same quote_id."""
        await self._call("calculate_quote", self.latency.quote)
        req = normalize_quote_request(request)
        rates: dict[str, dict[str, float]] = {}
        for r in self._query("SELECT factor, key, value FROM quote_rates"):
            rates.setdefault(r["factor"], {})[r["key"]] = r["value"]
        factors = {"base": rates["base"]["annual"], "risk": 1.0}  # anonymous: neutral risk
        if req["customer_id"] is not None:
            found = self._query("SELECT risk_score FROM customers WHERE id = ?", req["customer_id"])
            if not found:
                raise KeyError(f"unknown customer_id {req['customer_id']!r} in quote request")
            factors["risk"] = _rate(rates, "risk", found[0]["risk_score"])
        for factor, field in (("age", "driver_age"), ("vehicle", "vehicle_type"),
                              ("deductible", "deductible"), ("coverage", "coverage")):  # fmt: skip
            factors[factor] = _rate(rates, factor, req[field])
        canonical = json.dumps(req, sort_keys=True, separators=(",", ":"))
        return {"quote_id": "Q-" + hashlib.sha256(canonical.encode()).hexdigest()[:16], **req,
                "premium": round(math.prod(factors.values()), 2), "factors": factors,
                "valid_for_seconds": 86_400}  # fmt: skip

    # -- writes ------------------------------------------------------------------------------
    async def update_policy(self, policy_id: str | int, **changes: Any) -> Row:
        """Change a policy, bump its version, return the new row (KeyError if unknown)."""
        await self._call("update_policy", self.latency.write)
        return self._update("policies", str(policy_id), changes)

    async def update_customer(self, customer_id: str | int, **changes: Any) -> Row:
        """Change a customer, bump its version, return the new row (KeyError if unknown)."""
        await self._call("update_customer", self.latency.write)
        return self._update("customers", str(customer_id), changes)

    # -- `labcache.writes.WriteSink`: the same reads and writes by table, for write patterns --
    async def read(self, table: str, row_id: str | int, /) -> Row | None:
        """`get_policy`, `get_customer` or `get_agent_stats`, by table (counted as those)."""
        readers = {"policies": self.get_policy, "customers": self.get_customer,
                   "agents": self.get_agent_stats}  # fmt: skip
        if table not in readers:
            raise ValueError(f"cannot read {table!r}; tables: {sorted(readers)}")
        return await readers[table](str(row_id))

    async def update(self, table: str, row_id: str | int, /, **changes: Any) -> Row:
        """`update_policy` or `update_customer`, by table (counted as those)."""
        self.updatable(table)  # ValueError for a table no update may change
        writer = self.update_policy if table == "policies" else self.update_customer
        return await writer(row_id, **changes)

    def merge(self, table: str, current: Row, changes: Mapping[str, Any], /) -> Row:
        """The row once `changes` are applied (`merge_changes`), for write-behind's cache.

        A policy's `holder` is joined from its customer: a new `customer_id` drops it, so the
        row is not cached with the old holder's name (the next load joins the new one).
        """
        new = merge_changes(current, changes)
        if table == "policies" and "customer_id" in changes:
            new.pop("holder", None)
        return new

    async def apply_writes(
        self, writes: Sequence[tuple[str, str, Mapping[str, Any], int]]
    ) -> list[str]:
        """Apply queued (table, id, fields, version) writes: one call, one transaction.

        A write applies only if its version is newer than the last one applied to that row (the
        ``applied_writes`` ledger, updated in the same transaction), so a replayed or reordered
        write never overwrites a newer one. Per write: "applied", "stale" or "invalid: <why>";
        an invalid write changes nothing and does not stop the others.
        """
        await self._call("apply_writes", self.latency.write)
        checked: list[dict[str, Any] | str] = []
        for table, _, changes, _ in writes:
            try:
                checked.append(self.validate_changes(table, changes))
            except ValueError as exc:
                checked.append(f"invalid: {exc}")
        outcomes: list[str] = []
        with self._lock, self._conn:
            for (table, key, _, version), flat in zip(writes, checked, strict=True):
                last = self._conn.execute(
                    "SELECT version FROM applied_writes WHERE tbl = ? AND id = ?", (table, key)
                ).fetchone()
                if isinstance(flat, str) or (last is not None and last[0] >= version):
                    outcomes.append(flat if isinstance(flat, str) else "stale")
                    continue
                sets = ", ".join(f"{c} = ?" for c in flat)
                sql = f"UPDATE {table} SET {sets}, version = version + 1 WHERE id = ?"
                if self._conn.execute(sql, (*flat.values(), key)).rowcount == 0:
                    outcomes.append(f"invalid: no row with id {key!r} in {table}")
                    continue
                self._conn.execute(
                    "INSERT INTO applied_writes VALUES (?, ?, ?) ON CONFLICT (tbl, id) "
                    "DO UPDATE SET version = excluded.version", (table, key, version)
                )  # fmt: skip
                outcomes.append("applied")
        return outcomes

    def updatable(self, table: str) -> frozenset[str]:
        """The fields an update may change on ``table`` ("policies" or "customers")."""
        if table not in UPDATABLE:
            raise ValueError(f"cannot update {table!r}; updatable tables: {sorted(UPDATABLE)}")
        return frozenset(UPDATABLE[table])

    def _update(self, table: str, key: str, changes: Mapping[str, Any]) -> Row:
        """Validate first (`validate_changes`), so a bad write changes nothing."""
        flat = self.validate_changes(table, changes)
        sets = ", ".join(f"{c} = ?" for c in flat)
        with self._lock, self._conn:
            sql = f"UPDATE {table} SET {sets}, version = version + 1 WHERE id = ?"
            self._conn.execute(sql, (*flat.values(), key))
        row = self._row(table, key)
        if row is None:
            raise KeyError(f"no row with id {key!r} in {table}")
        return row

    def validate_changes(
        self, table: str, changes: Mapping[str, Any], *, check_references: bool = True
    ) -> dict[str, Any]:
        """The columns an update would set, after checking names, types and (if asked) that
        referenced customers and agents exist; ValueError otherwise. Instant and not counted."""
        unknown = set(changes) - self.updatable(table)
        if unknown or not changes:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'} on {table}; "
                             f"updatable fields: {sorted(UPDATABLE[table])}")  # fmt: skip
        name, prefix, parts = NESTED[table]
        flat = {k: v for k, v in changes.items() if k != name}
        if name in changes:
            if not isinstance(changes[name], Mapping) or set(changes[name]) - set(parts):
                raise ValueError(f"{name} must be a mapping with keys from {parts}")
            flat.update({prefix + k: v for k, v in changes[name].items()})
        for col, value in flat.items():
            kind = SCHEMA[table][col]
            allowed = (int, float) if kind is float else kind
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise ValueError(f"{col} must be {kind.__name__}, got {value!r}")
        for ref, ref_table in (("customer_id", "customers"), ("agent_id", "agents")):
            if not check_references or ref not in flat:
                continue
            if not self._query(f"SELECT id FROM {ref_table} WHERE id=?", flat[ref]):
                raise ValueError(f"{ref} {flat[ref]!r} does not exist")
        return flat

    # -- sorted key lists for warming and workloads: instant and not counted -----------------
    def policy_ids(self) -> list[str]:
        return [r["id"] for r in self._query("SELECT id FROM policies ORDER BY id")]

    def customer_ids(self) -> list[str]:
        return [r["id"] for r in self._query("SELECT id FROM customers ORDER BY id")]

    def agent_ids(self) -> list[str]:
        return [r["id"] for r in self._query("SELECT id FROM agents ORDER BY id")]


def _rate(rates: Mapping[str, Mapping[str, float]], factor: str, value: Any) -> float:
    """An exact-match factor, or for a banded one the band with the highest lower bound."""
    table = rates[factor]
    key = value
    if factor in BANDED:
        key = str(max((int(k) for k in table if int(k) <= value), default=-1))
    if key not in table:
        raise ValueError(f"{factor} {value!r} is not rated; the table has {sorted(table)}")
    return table[key]


if __name__ == "__main__":
    for written in write_csvs(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR).values():
        print(f"wrote {written} ({written.stat().st_size:,} bytes)")
