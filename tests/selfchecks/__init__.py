"""The exercise-check cases of each notebook: `nbNN.py` holds `CASES` and `CLEANUP`.

`SETUP` (optional) lists the notebook's cell ids to run first, in order (default: the cells
with ids `imports`, `settings`, `connect`). A case is (answer, check, expected): `answer` is a
cell id of the notebook or code to run in its place, `check` the id of the check cell,
`expected` fragments that must all be in what the check printed. A notebook's module proves its
checks: NOT ATTEMPTED for the stored stub, FAIL (with the reason) for each known wrong answer,
PASS for the course's solution.
"""

from __future__ import annotations

# (answer: a cell id in the notebook or code to run instead, check cell id, expected fragments)
Case = tuple[str, str, tuple[str, ...]]
