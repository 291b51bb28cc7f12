"""Every test, and every notebook nbval re-runs, talks to a redis-server this suite starts.

It lives here, at the root, so that `pytest --nbval notebooks/X.ipynb` alone gets it too:
`REDIS_URL` points at it before any notebook kernel starts, and nothing touches the Redis at
localhost:6379. `LABCACHE_TEST_REDIS_URL` runs everything against another server instead.
"""

from __future__ import annotations

import os

import pytest

from labcache.embedded import RedisServer, free_port

SERVER: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global SERVER
    if os.environ.get("LABCACHE_TEST_REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["LABCACHE_TEST_REDIS_URL"]
        return
    SERVER = RedisServer(port=free_port()).start()
    os.environ["REDIS_URL"] = SERVER.url
    os.environ["LABCACHE_TEST_REDIS_URL"] = SERVER.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if SERVER is not None:
        SERVER.stop()
