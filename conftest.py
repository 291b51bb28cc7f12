"""Every test, and every notebook nbval re-runs, talks to a redis-server this suite starts.

It lives here, at the root, so that `pytest --nbval notebooks/X.ipynb` alone gets it too:
`REDIS_URL` points at it before any notebook kernel starts, and nothing touches the Redis at
localhost:6379. `LABCACHE_TEST_REDIS_URL` runs everything against another server instead.

The notebooks run as a student of a class would: `REDIS_URL` names an ACL user limited to
`lab10:<LABCACHE_STUDENT>:` (default student `nbval`) without the dangerous commands; the
library tests use `LABCACHE_TEST_REDIS_URL`, the server's default (admin) user. Anything that
user is refused lands in the server's ACL LOG, and fails the run.

`LABCACHE_CHECK_TMP=1` fails the run if it leaves anything new in the temp directory (pytest's
own `pytest-of-<user>` aside): best with a private `TMPDIR=$(mktemp -d)`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import redis

from labcache.embedded import RedisServer, free_port
from labcache.lab.student import student_url
from tests.notebook_runner import NBVAL_PASSWORD, NBVAL_STUDENT

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
    os.environ["LABCACHE_TEST_REDIS_URL"] = SERVER.url
    os.environ["REDIS_URL"] = _student_url(SERVER)


def _student_url(server: RedisServer) -> str:
    """An ACL user for the notebooks, as an instructor would make one per student."""
    name = os.environ.setdefault("LABCACHE_STUDENT", NBVAL_STUDENT)
    return student_url(server.url, name, NBVAL_PASSWORD)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SERVER is not None:
        SERVER.stop()


def _refused() -> list[str]:
    """What the server refused the notebooks' student user (its ACL LOG entries)."""
    if SERVER is None:
        return []
    name = os.environ["LABCACHE_STUDENT"]
    with redis.Redis.from_url(SERVER.url, decode_responses=True) as admin:
        entries = admin.acl_log(128)
    return [
        f"  {e['reason']} {e['object']!r} ({e['context']}, {e['count']}x)"
        for e in entries
        if e.get("username") == name
    ]


def _tmp_left() -> list[str]:
    assert TMP_BEFORE is not None
    ours = {SERVER.directory.name} if SERVER and SERVER.directory else set()  # gone at unconfigure
    return sorted(
        name
        for name in set(os.listdir(tempfile.gettempdir())) - TMP_BEFORE - ours
        if not name.startswith("pytest-of-")
    )


def _fail(session: pytest.Session, message: str, lines: list[str]) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("!", message, red=True)
        reporter.write_line("\n".join(lines))
    else:
        print(message, *lines, sep="\n")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The student user was refused nothing; with LABCACHE_CHECK_TMP=1, nothing is left in TMP."""
    if refused := _refused():
        _fail(
            session, f"ACL LOG: the notebooks' student user was refused ({len(refused)})", refused
        )
    if TMP_BEFORE is None:
        return
    deadline = time.monotonic() + TMP_GRACE
    while (left := _tmp_left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    base = Path(tempfile.gettempdir())
    lines = [f"  {base / name}{'/' if (base / name).is_dir() else ''}" for name in left]
    _fail(session, f"LABCACHE_CHECK_TMP: left behind in {base} ({len(left)})", lines)
