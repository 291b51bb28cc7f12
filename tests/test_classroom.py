"""Issue 15: two students run every notebook at the same time on one shared Redis.

A redis-server of the test's own plays the class's server; an instructor's ACL user per student
(`labcache.lab.student.acl_rules`: their own prefix, no dangerous commands). Both students run
all eight notebooks with the course's solutions (`LABCACHE_SOLUTIONS=1`), at once. Then:

- every notebook ran top to bottom without an error, and every self-check printed PASS;
- the server refused nothing (`ACL LOG` empty) and never ran KEYS, FLUSHDB, FLUSHALL, CONFIG or
  DEBUG (its command statistics);
- sampled while they ran, every key on the server was under one of the two students' prefixes,
  and at the end neither student left a key behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import redis

from labcache.embedded import RedisServer, free_port
from labcache.lab.student import acl_rules

pytestmark = [pytest.mark.notebook, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
STUDENTS = {"alice": "alice-Class-pw-1", "bob": "bob-Class-pw-2"}
FORBIDDEN = ("keys", "flushdb", "flushall", "config", "debug")


def student_env(name: str, password: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LABCACHE_"))}
    env |= {
        "REDIS_URL": f"redis://{name}:{password}@127.0.0.1:{port}/0",
        "LABCACHE_STUDENT": name,
        "LABCACHE_SOLUTIONS": "1",
    }
    return env


class KeySampler(threading.Thread):
    """Every 0.5 s, SCAN the whole server: the most keys each student held, and any stranger."""

    def __init__(self, admin: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.admin, self.done = admin, threading.Event()
        self.peak = dict.fromkeys(STUDENTS, 0)
        self.strangers: set[str] = set()

    def run(self) -> None:
        while not self.done.wait(0.5):
            held = dict.fromkeys(STUDENTS, 0)
            for raw in self.admin.scan_iter(count=1000):
                key = raw.decode(errors="replace")
                owner = next((s for s in STUDENTS if key.startswith(f"lab10:{s}:")), None)
                if owner is None:
                    self.strangers.add(key)
                else:
                    held[owner] += 1
            self.peak = {s: max(self.peak[s], held[s]) for s in STUDENTS}


def self_checks(nb: nbformat.NotebookNode) -> list[str]:
    """What each exercise check cell printed."""
    return [
        "".join(out.get("text", "") for out in cell.outputs).strip()
        for cell in nb.cells
        if cell.cell_type == "code" and "await check_exercise_" in cell.source
    ]


# Both students' runs take about 135 s on 2 quiet cores; a busy machine may take several times that.
CLASS_TIMEOUT = 1200


@pytest.mark.timeout(CLASS_TIMEOUT + 120)
def test_two_students_share_one_server(tmp_path: Path) -> None:
    with RedisServer(port=free_port()) as server:
        admin = redis.Redis(host="127.0.0.1", port=server.port)
        for name, password in STUDENTS.items():
            admin.execute_command("ACL", "SETUSER", name, *acl_rules(name, password))
        before = admin.info("commandstats")
        sampler = KeySampler(admin)
        sampler.start()
        start = time.perf_counter()
        runs: dict[str, subprocess.Popen[str]] = {}
        try:
            for name, password in STUDENTS.items():
                (tmp_path / name).mkdir()
                runs[name] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.notebook_runner",
                        "--env",
                        "--solutions",
                        "--out",
                        str(tmp_path / name),
                        *map(str, NOTEBOOKS),
                    ],
                    cwd=ROOT,
                    env=student_env(name, password, server.port),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            outputs = {
                name: run.communicate(timeout=CLASS_TIMEOUT)[0] for name, run in runs.items()
            }
            elapsed = time.perf_counter() - start
        finally:  # on a timeout too: no student run outlives the test, no sampler its server
            for run in runs.values():
                if run.poll() is None:
                    run.kill()
                    run.communicate()
            sampler.done.set()
            sampler.join()
        refused = admin.acl_log(128)
        stats = admin.info("commandstats")
        left = {name: sum(1 for _ in admin.scan_iter(match=f"lab10:{name}:*")) for name in STUDENTS}
        admin.close()

    print(
        f"\n[classroom] {len(STUDENTS)} students x {len(NOTEBOOKS)} notebooks in {elapsed:.0f} s; "
        f"peak keys per student {sampler.peak}; ACL LOG entries {len(refused)}"
    )
    for name, text in outputs.items():
        times = [line for line in text.splitlines() if re.fullmatch(r"\S+\.ipynb [\d.]+", line)]
        print(f"[classroom] {name} (s per notebook): " + ", ".join(times))
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}'s run failed:\n{outputs[name][-8000:]}"
    for name in STUDENTS:
        for path in NOTEBOOKS:
            nb = nbformat.read(tmp_path / name / path.name, as_version=4)
            errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
            assert not errors, f"{name}, {path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
            checks = self_checks(nb)
            assert checks, f"{path.name} has no exercise check cell"
            failing = [text for text in checks if not text.startswith("PASS")]
            assert not failing, f"{name}, {path.name}: a solution did not pass: {failing}"
    assert refused == [], refused
    ran = sorted(
        cmd
        for cmd, stat in stats.items()
        if cmd.removeprefix("cmdstat_").split("|")[0] in FORBIDDEN
        and stat["calls"] > before.get(cmd, {}).get("calls", 0)
    )
    assert ran == [], f"the shared server ran {ran}"
    assert not sampler.strangers, (
        f"keys outside the students' prefixes: {sorted(sampler.strangers)[:10]}"
    )
    assert all(sampler.peak.values()), f"a student wrote no key at all: {sampler.peak}"
    assert left == dict.fromkeys(STUDENTS, 0), f"keys left behind: {left}"
