"""Run notebooks top to bottom as one student of a class: `python -m tests.classroom_run OUT NB...`.

The student comes from the environment (`REDIS_URL` naming the student's ACL user,
`LABCACHE_STUDENT`, `LABCACHE_SOLUTIONS`), as in a student's `.env`. Each executed notebook is
written to OUT (for the test to read); the run stops at the first cell that raises, and prints
one line per notebook: `<name> <seconds>`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(out: Path, notebooks: list[Path]) -> int:
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute()
        finally:
            nbformat.write(nb, out / path.name)
        print(path.name, f"{time.perf_counter() - start:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
