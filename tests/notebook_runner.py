"""Execute notebooks in a fresh kernel each, as a student of the class would run them.

`python -m tests.notebook_runner NB...` re-executes notebooks and stores them in place (what
`make notebooks` does): against a redis-server of its own, as the suite's student user (ACL
fenced to `lab10:nbval:`), exactly as nbval then re-runs them, and with a PNG copy of every
figure (tests/static_figures.py). `--out DIR` writes the executed
copies to DIR instead; `--solutions` runs them with `LABCACHE_SOLUTIONS=1`; `--env` takes
`REDIS_URL` and `LABCACHE_STUDENT` from the environment (the classroom rehearsal in
`tests/test_classroom.py`).

Kernels talk to the runner over unix sockets (`transport="ipc"`), never TCP: two runners
starting kernels at once can otherwise pick the same free port (ZMQ "Address already in use").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from nbclient import NotebookClient

from labcache.embedded import RedisServer, free_port
from labcache.lab.student import student_url
from tests.static_figures import add_pngs, snapshot_widgets

NBVAL_STUDENT = "nbval"
NBVAL_PASSWORD = "nbval-Student-pw"  # tests/test_security.py checks no notebook stores it


def execute(
    nb: nbformat.NotebookNode,
    folder: Path,
    timeout: int = 300,
    widgets: dict[str, Any] | None = None,
) -> None:
    """Run every cell of `nb` in a new kernel whose working folder is `folder`.

    Given a `widgets` dict, the figure inside each live widget is copied into it after every
    cell (by model id), so it holds each figure as it stood at the end of the run.
    """
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True)
    # An absolute socket path: the kernel runs in `folder`, the runner wherever it was started.
    sockets = runtime / f"labcache-{uuid.uuid4().hex[:12]}"
    kernel = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(sockets))
    client = NotebookClient(
        nb, km=kernel, timeout=timeout, resources={"metadata": {"path": str(folder)}}
    )
    if widgets is not None:

        async def snapshot(cell_index: int, **_: Any) -> None:
            widgets.update(await snapshot_widgets(client, nb.cells[: cell_index + 1]))

        client.on_cell_executed = snapshot
    # A client given a kernel manager leaves the kernel running unless told to clean up: then
    # it shuts the kernel down and removes its connection file and sockets.
    client.execute(cleanup_kc=True)


def stored(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What is kept of a run: outputs, without what changes every run and restores nothing.

    The saved widget state (`metadata.widgets`) is dropped: 93-98 % of a notebook, almost all
    of it the plotly.js bundle a figure widget carries as its code, written again on every run
    (5 MB a notebook), and a live widget is not brought back from it anyway. So are the cells'
    execution timestamps.
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def run(notebooks: list[Path], out: Path | None) -> int:
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        widgets: dict[str, Any] = {}
        try:
            execute(nb, path.parent, widgets=widgets if out is None else None)
        finally:
            if out is not None:
                nbformat.write(nb, out / path.name)
        ran = time.perf_counter() - start
        if out is None:
            pngs = add_pngs(nb, widgets)
            nbformat.write(stored(nb), path)
            print(path.name, f"{ran:.1f}", f"({pngs} figures stored as PNG too)", flush=True)
        else:
            print(path.name, f"{ran:.1f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.notebook_runner")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write executed copies here (else in place)")
    parser.add_argument(
        "--solutions", action="store_true", help="LABCACHE_SOLUTIONS=1 (needs --out)"
    )
    parser.add_argument(
        "--env",
        action="store_true",
        help="REDIS_URL and LABCACHE_STUDENT from the environment (needs --out)",
    )
    args = parser.parse_args(argv)
    if (args.solutions or args.env) and args.out is None:
        parser.error("--solutions and --env write executed copies only: give --out DIR")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.solutions:
        os.environ["LABCACHE_SOLUTIONS"] = "1"
    elif not args.env:  # the stored notebooks hold the stubs
        os.environ.pop("LABCACHE_SOLUTIONS", None)
    if args.env:
        return run(args.notebooks, args.out)
    with RedisServer(port=free_port()) as server:
        os.environ["LABCACHE_STUDENT"] = NBVAL_STUDENT
        os.environ["REDIS_URL"] = student_url(server.url, NBVAL_STUDENT, NBVAL_PASSWORD)
        return run(args.notebooks, args.out)


if __name__ == "__main__":
    sys.exit(main())
