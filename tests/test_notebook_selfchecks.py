"""The notebooks' exercise checks tell a stub, wrong answers and the solution apart.

nbval only sees the stored stubs, whose checks say NOT ATTEMPTED. Here each case runs the
notebook's own set-up cells (ids `imports`, `settings`, `connect`), then a student's answer (a
cell of the notebook, or code: a wrong answer, or the course's solution imported from
`labcache.lab.solutions`), then the notebook's own check cell, in one kernel against the suite's
Redis (`REDIS_URL` from conftest), and reads what the check printed. The cases of each notebook
are in `tests/selfchecks/nbNN.py`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat
import pytest

from tests.notebook_runner import execute
from tests.selfchecks import Case

pytestmark = pytest.mark.notebook
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_checks(
    notebook: str, cases: list[Case], cleanup: str, setup: list[str] | None = None
) -> list[str]:
    """Run set-up, then each case's answer and check; return what each check printed."""
    source = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    by_id = {cell.id: cell.source for cell in source.cells}
    if setup is None:
        setup = [cell_id for cell_id in ("imports", "settings", "connect") if cell_id in by_id]
    cells = [nbformat.v4.new_code_cell(by_id[cell_id]) for cell_id in setup]
    checks: list[int] = []
    for answer, check, _ in cases:
        cells.append(nbformat.v4.new_code_cell(by_id.get(answer, answer)))
        cells.append(nbformat.v4.new_code_cell(by_id[check]))
        checks.append(len(cells) - 1)
    cells.append(nbformat.v4.new_code_cell(cleanup))
    nb = nbformat.v4.new_notebook(cells=cells, metadata=source.metadata)
    execute(nb, NOTEBOOKS, timeout=120)
    return ["".join(out.get("text", "") for out in nb.cells[i].outputs) for i in checks]


def assert_cases(printed: list[str], cases: list[Case]) -> None:
    for text, (answer, _, expected) in zip(printed, cases, strict=True):
        for fragment in expected:
            assert fragment in text, f"answer {answer!r}: expected {fragment!r} in {text!r}"


PARTS = sorted(path.stem for path in (Path(__file__).parent / "selfchecks").glob("nb*.py"))


@pytest.mark.parametrize("part", PARTS)
def test_exercise_checks_tell_right_from_wrong(part: str) -> None:
    cases = importlib.import_module(f"tests.selfchecks.{part}")
    notebook = next(NOTEBOOKS.glob(f"{part.removeprefix('nb')}-*.ipynb")).name
    setup = getattr(cases, "SETUP", None)
    assert_cases(run_checks(notebook, cases.CASES, cases.CLEANUP, setup), cases.CASES)
