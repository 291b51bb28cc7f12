"""The notebooks' exercise checks: PASS for a right answer, FAIL with the reason for wrong ones.

nbval only sees the stored answer, which passes. Here each case runs the notebook's own set-up
cells, then a student's (wrong or right) answer, then the notebook's own check cell, in one
kernel against the suite's Redis (`REDIS_URL` from conftest), and reads what the check printed.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.notebook
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# (answer: a cell id in the notebook or code to run instead, check cell id, expected fragments)
Case = tuple[str, str, tuple[str, ...]]


def run_checks(notebook: str, cases: list[Case], cleanup: str) -> list[str]:
    """Run set-up, then each case's answer and check; return what each check printed."""
    source = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    by_id = {cell.id: cell.source for cell in source.cells}
    setup = [cell_id for cell_id in ("imports", "settings", "connect") if cell_id in by_id]
    cells = [nbformat.v4.new_code_cell(by_id[cell_id]) for cell_id in setup]
    checks: list[int] = []
    for answer, check, _ in cases:
        cells.append(nbformat.v4.new_code_cell(by_id.get(answer, answer)))
        cells.append(nbformat.v4.new_code_cell(by_id[check]))
        checks.append(len(cells) - 1)
    cells.append(nbformat.v4.new_code_cell(cleanup))
    nb = nbformat.v4.new_notebook(cells=cells, metadata=source.metadata)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return ["".join(out.get("text", "") for out in nb.cells[i].outputs) for i in checks]


def assert_cases(printed: list[str], cases: list[Case]) -> None:
    for text, (answer, _, expected) in zip(printed, cases, strict=True):
        for fragment in expected:
            assert fragment in text, f"answer {answer!r}: expected {fragment!r} in {text!r}"


NB01_CASES: list[Case] = [
    ("await redis.set(NS + 'exercise:greeting', 'hi')", "ex1-check", ("FAIL", "never expires")),
    ("await redis.set(NS + 'exercise:greeting', 'hi', ex=3600)", "ex1-check", ("FAIL", "3600 s")),
    (
        "await redis.delete(NS + 'exercise:greeting')\n"
        "await redis.rpush(NS + 'exercise:greeting', 'hi')\n"
        "await redis.expire(NS + 'exercise:greeting', 20)",
        "ex1-check",
        ("FAIL", "holds a list"),
    ),
    ("await redis.delete(NS + 'exercise:greeting')", "ex1-check", ("FAIL", "does not exist")),
    ("ex1-answer", "ex1-check", ("PASS",)),
    (
        "await unlink_matching(redis, NS + 'exercise:p:*')\n"
        "for i in range(50):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x', ex=60)\n"
        "one_by_one_ms, pipelined_ms = 10.0, 1.0",
        "ex2-check",
        ("FAIL", "50 of the 100 keys"),
    ),
    (
        "for i in range(100):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x')\n"
        "one_by_one_ms, pipelined_ms = 10.0, 1.0",
        "ex2-check",
        ("FAIL", "never expire"),
    ),
    (
        "for i in range(100):\n"
        "    await redis.set(f'{NS}exercise:p:{i}', 'x', ex=60)\n"
        "one_by_one_ms, pipelined_ms = 10.0, 20.0",
        "ex2-check",
        ("FAIL", "not faster"),
    ),
    ("ex2-answer", "ex2-check", ("PASS",)),
]

NB02_CASES: list[Case] = [
    (
        "async def get_customer_cached(customer_id):\n"
        "    return await db.get_customer(customer_id)",
        "ex1-check",
        ("FAIL", "called the database 2 times", "is not in Redis"),
    ),
    (
        "async def get_customer_cached(customer_id):\n"
        "    return await cache.get(f'customer:{customer_id}',\n"
        "                           lambda: db.get_customer(customer_id), ttl=60)",
        "ex1-check",
        ("FAIL", "the TTL is 60 s"),
    ),
    ("ex1-answer", "ex1-check", ("PASS",)),
    (
        "async def change_email(customer_id, email):\n"
        "    await db.update_customer(customer_id, email=email)",
        "ex2-check",
        ("FAIL", "still serves the old copy"),
    ),
    ("ex2-answer", "ex2-check", ("PASS",)),
]


@pytest.mark.parametrize(
    ("notebook", "cases", "cleanup"),
    [
        pytest.param(
            "01-setup-and-connection.ipynb",
            NB01_CASES,
            "await unlink_matching(redis, NS + '*')",
            id="01",
        ),
        pytest.param(
            "02-cache-aside.ipynb", NB02_CASES, "await cache.invalidate_pattern('*')", id="02"
        ),
    ],
)
def test_exercise_checks_tell_right_from_wrong(
    notebook: str, cases: list[Case], cleanup: str
) -> None:
    assert_cases(run_checks(notebook, cases, cleanup), cases)
