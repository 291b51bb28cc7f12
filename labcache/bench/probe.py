"""A PING loop in another process: how long does Redis stall while something else runs?

A second process (not a task on the benchmark's event loop) so that a busy loop on our side
cannot blur what the server does: if KEYS blocks Redis for 10 ms, a PING sent meanwhile comes
back 10 ms late, whatever the benchmark process is doing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from typing import Any

# Pause between PINGs: keeps the probe from taking a whole core of a 2-core machine, and still
# catches any stall longer than ~1 ms.
INTERVAL = 0.0005


def _ping_loop(url: str, conn: Connection) -> None:
    """The child: PING, record the latency, answer `mark` with the worst since the last mark."""
    import redis

    with contextlib.suppress(OSError):  # measure the server, not our turn on a busy CPU (root)
        os.nice(-10)
    client = redis.Redis.from_url(url)
    worst, count = 0.0, 0
    try:
        client.ping()
        conn.send("ready")
        while True:
            if conn.poll():
                message = conn.recv()
                if message == "stop":
                    return
                conn.send((worst, count))
                worst, count = 0.0, 0
            t0 = time.perf_counter()
            client.ping()
            latency = time.perf_counter() - t0
            worst = max(worst, latency)
            count += 1
            time.sleep(INTERVAL)
    finally:
        client.close()
        conn.close()


class PingProbe:
    """`mark()` returns (worst PING seconds, PINGs) since the previous mark."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Connection | None = None
        self._process: Any = None

    def start(self, timeout: float = 30.0) -> PingProbe:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with a live loop
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_ping_loop, args=(self.url, child), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(timeout) or parent.recv() != "ready":
            self.stop()
            raise RuntimeError(f"the PING probe did not start within {timeout}s")
        return self

    def mark(self) -> tuple[float, int]:
        assert self._conn is not None, "probe not started"
        self._conn.send("mark")
        worst, count = self._conn.recv()
        return float(worst), int(count)

    def stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send("stop")
            conn.close()
        process, self._process = self._process, None
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)

    def __enter__(self) -> PingProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
