"""How long a second client's PING waits while invalidations run (notebooks 02 and 04, `KEYS`).

The plumbing of the `KEYS` experiments (mistake 2) in notebooks 02 and 04: `fill` writes many
keys fast (1,000 per Lua call, 20 calls per pipeline), `PingProcess` is a second client in its
own process that PINGs the server in a loop and records every round trip, and `ping_tables` /
`ping_figure` group those round trips by the invalidation that was running while each was in
flight. The PINGs run in a separate process so that they wait for the server, not for the
notebook's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import pandas as pd
import redis.asyncio as aioredis

from labcache.lab.student import child_url

T = TypeVar("T")

IDLE = "idle (between runs)"

_FILL = """
for _, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
if ARGV[3] ~= '' then
  redis.call('SADD', ARGV[3], unpack(KEYS))
  redis.call('PEXPIRE', ARGV[3], ARGV[2])
end
return #KEYS
"""

_PINGER = r"""
import json, select, sys, time
import redis
client = redis.Redis.from_url(sys.stdin.readline().strip())
client.ping()
print("ready", flush=True)
samples = []
while not select.select([sys.stdin], [], [], 0)[0]:
    sent = time.monotonic()
    client.ping()
    samples.append((sent, time.monotonic() - sent))
    time.sleep(0.0002)
print(json.dumps(samples))
"""


async def fill(
    client: aioredis.Redis,
    keys: Sequence[str],
    *,
    tag_key: str = "",
    ttl_ms: int = 600_000,
    batch: int = 1_000,
    per_pipeline: int = 20,
    progress: Any = None,
) -> None:
    """SET every key (16 bytes, `ttl_ms`), SADD them to `tag_key` if given; `progress.update(n)`."""
    script = client.register_script(_FILL)
    for start in range(0, len(keys), batch * per_pipeline):
        stop = min(start + batch * per_pipeline, len(keys))
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, stop, batch):
                chunk = list(keys[i : min(i + batch, stop)])
                await script(keys=chunk, args=["x" * 16, ttl_ms, tag_key], client=pipe)
            await pipe.execute()
        if progress is not None:
            progress.update(stop - start)


class PingProcess:
    """A second client in its own process, PINGing `client`'s server until the block ends.

    `async with PingProcess(client) as pinger:` starts it and waits for its first PING; on
    leaving the block it stops, and `pinger.samples` holds (sent at, round trip) pairs in
    seconds of `time.monotonic()`. The server's URL (`child_url`, with the password) goes over
    stdin, never into the process list. The process is killed if the block raises.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.url = child_url(client)
        self.samples: list[tuple[float, float]] = []
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> PingProcess:
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PINGER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((self.url + "\n").encode())
            await proc.stdin.drain()
            if (await proc.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the PING process could not reach the server")
        except BaseException:
            await self._end()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            if exc_type is None:
                proc.stdin.write(b"stop\n")
                await proc.stdin.drain()
                self.samples = [(s, d) for s, d in json.loads(await proc.stdout.read())]
                # It exits by itself now. Killing it instead would race that exit: kill() polls,
                # reaping the child behind asyncio's watcher ("Unknown child process pid").
                await proc.wait()
        finally:
            await self._end()

    async def _end(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def timed(action: Callable[[], Awaitable[T]]) -> tuple[T, float, float]:
    """Await `action()`: (its result, start, end) in seconds of `time.monotonic()`."""
    t0 = time.monotonic()
    result = await action()
    return result, t0, time.monotonic()


def ping_tables(
    samples: Sequence[tuple[float, float]],
    windows: Sequence[tuple[str, float, float, int, Mapping[str, int]]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(pings, runs, summary) from PING samples and runs (method, start, end, removed, sent).

    A PING belongs to the run it was in flight during, if any, else to `IDLE`. The summary has,
    per method: PINGs, median and worst round trip, the median of each run's worst PING, the
    median run time and the commands one run sent (PINGs left out).
    """
    rows = []
    for sent_at, seconds in samples:
        run = next(
            (i for i, w in enumerate(windows) if sent_at < w[2] and sent_at + seconds > w[1]), None
        )
        method = IDLE if run is None else windows[run][0]
        rows.append({"run": run, "method": method, "ping_ms": seconds * 1000})
    pings = pd.DataFrame(rows, columns=["run", "method", "ping_ms"])
    summary = pings.groupby("method")["ping_ms"].agg(
        pings="count", median_ms="median", worst_ms="max"
    )
    per_run_worst = pings.dropna(subset=["run"]).groupby(["method", "run"])["ping_ms"].max()
    summary["worst per run, median_ms"] = per_run_worst.groupby("method").median()
    runs = pd.DataFrame(list(windows), columns=["method", "t0", "t1", "removed", "sent"])
    runs["ms"] = (runs.t1 - runs.t0) * 1000
    summary["invalidation_ms (median)"] = runs.groupby("method")["ms"].median()
    summary["commands per run"] = (
        runs.groupby("method")["sent"]
        .first()
        .map(
            lambda sent: ", ".join(
                f"{n} {c.upper()}" for c, n in sorted(sent.items()) if c != "ping"
            )
        )
    )
    return pings, runs, summary


def ping_figure(pings: pd.DataFrame, colors: Mapping[str, str], title: str) -> Any:
    """A box per method (and one for idle PINGs): quartiles, median, fastest and slowest PING."""
    import plotly.graph_objects as go

    from labcache.lab.display import COLORS, style

    fig = go.Figure()
    for method in [*colors, IDLE]:
        v = pings.loc[pings.method == method, "ping_ms"]
        fig.add_box(
            x=[method],
            q1=[v.quantile(0.25)],
            median=[v.median()],
            q3=[v.quantile(0.75)],
            lowerfence=[v.min()],
            upperfence=[v.max()],
            name=method,
            marker_color=colors.get(method, COLORS["error"]),
        )
    style(fig, title, "what was running", "PING round trip (ms, log scale)")
    fig.update_yaxes(type="log")
    return fig
