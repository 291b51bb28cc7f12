"""Every test, and every notebook nbval re-runs, talks to a redis-server this suite starts.

It lives here, at the root, so that `pytest --nbval notebooks/X.ipynb` alone gets it too:
`REDIS_URL` points at it before any notebook kernel starts, and nothing touches the Redis at
localhost:6379. `LABCACHE_TEST_REDIS_URL` runs everything against another server instead.

`LABCACHE_CHECK_TMP=1` fails the run if it leaves anything new in the temp directory (pytest's
own `pytest-of-<user>` aside): best with a private `TMPDIR=$(mktemp -d)`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from labcache.embedded import RedisServer, free_port

SERVER: RedisServer | None = None
TMP_BEFORE: set[str] | None = None  # the temp directory's entries at start, if checked
TMP_GRACE = 10.0  # seconds for what a killed kernel leaves to its guards to remove


def pytest_configure(config: pytest.Config) -> None:
    global SERVER, TMP_BEFORE
    if os.environ.get("LABCACHE_CHECK_TMP") == "1":
        TMP_BEFORE = set(os.listdir(tempfile.gettempdir()))
    if os.environ.get("LABCACHE_TEST_REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["LABCACHE_TEST_REDIS_URL"]
        return
    SERVER = RedisServer(port=free_port()).start()
    os.environ["REDIS_URL"] = SERVER.url
    os.environ["LABCACHE_TEST_REDIS_URL"] = SERVER.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if SERVER is not None:
        SERVER.stop()


def _tmp_left() -> list[str]:
    assert TMP_BEFORE is not None
    ours = {SERVER.directory.name} if SERVER and SERVER.directory else set()  # gone at unconfigure
    return sorted(
        name
        for name in set(os.listdir(tempfile.gettempdir())) - TMP_BEFORE - ours
        if not name.startswith("pytest-of-")
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With LABCACHE_CHECK_TMP=1: whatever the run left in the temp directory fails it."""
    if TMP_BEFORE is None:
        return
    deadline = time.monotonic() + TMP_GRACE
    while (left := _tmp_left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    base = Path(tempfile.gettempdir())
    lines = [f"  {base / name}{'/' if (base / name).is_dir() else ''}" for name in left]
    message = f"LABCACHE_CHECK_TMP: left behind in {base} ({len(left)})"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("!", message, red=True)
        reporter.write_line("\n".join(lines))
    else:
        print(message, *lines, sep="\n")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
