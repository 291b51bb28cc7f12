"""The course database's tables: one schema for the CSV header, SQLite and every value's type.

The lab's objects nest some columns (a policy's `coverage`, a customer's `address`); `NESTED`
says how a flat row becomes the nested object, and `UPDATABLE` which fields an update may set.
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

# One schema drives the CSV header, the SQLite table and the type of every loaded value.
SCHEMA: dict[str, dict[str, type]] = {
    "customers": {"id": str, "name": str, "email": str, "phone": str, "street": str,
                  "city": str, "state": str, "zip": str, "risk_score": int, "version": int},
    "agents": {"id": str, "name": str, "sales_this_month": int, "revenue": float,
               "customer_satisfaction": float, "policies_managed": int},
    "policies": {"id": str, "number": str, "customer_id": str, "agent_id": str, "type": str,
                 "premium": float, "deductible": int, "coverage_liability": int,
                 "coverage_collision": int, "coverage_comprehensive": int,
                 "effective_date": str, "expiration_date": str, "version": int},
    "quote_rates": {"factor": str, "key": str, "value": float},
}  # fmt: skip
SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}
# How a flat row becomes the lab's nested object (and how a nested update becomes columns).
NESTED = {"policies": ("coverage", "coverage_", ("liability", "collision", "comprehensive")),
          "customers": ("address", "", ("street", "city", "state", "zip"))}  # fmt: skip
UPDATABLE = {
    "policies": {"type", "premium", "deductible", "coverage", "effective_date",
                 "expiration_date", "customer_id", "agent_id"},
    "customers": {"name", "email", "phone", "address", "risk_score"},
}  # fmt: skip
