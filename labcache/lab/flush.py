"""The write-behind flusher as its own process, on the course's SQLite database.

`python -m labcache.lab.flush flush --url ... --db FILE --namespace ...` applies the stream of a
`WriteBehind` to an `InsuranceDB` file until SIGINT/SIGTERM (then drains), or with
`--until-empty` until the stream is empty, and prints its statistics as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict

import redis.asyncio as aioredis

from labcache.flusher import Flusher, FlushStats
from labcache.lab.data import InsuranceDB


async def run_flusher(
    url: str,
    database: str,
    *,
    namespace: str = "lab10:",
    stream: str = "__writes__",
    group: str = "flushers",
    consumer: str | None = None,
    batch_size: int = 100,
    interval: float = 0.5,
    min_idle: float = 30.0,
    latency_scale: float = 1.0,
    until_empty: bool = False,
) -> FlushStats:
    """Flush until SIGINT/SIGTERM (then drain), or with `until_empty` until the stream is empty."""
    redis = aioredis.from_url(url)
    db = InsuranceDB(database=database, latency_scale=latency_scale)
    flusher = Flusher(
        redis,
        db,
        namespace + stream,
        group=group,
        consumer=consumer,
        batch_size=batch_size,
        interval=interval,
        min_idle=min_idle,
    )
    try:
        if until_empty:
            await flusher.flush(timeout=None)
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await flusher.start()
            await stop.wait()
    finally:
        await flusher.stop()
        await redis.aclose()
        db.close()
    return flusher.stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labcache.lab.flush")
    commands = parser.add_subparsers(dest="command", required=True)
    flush = commands.add_parser("flush", help="apply a write-behind stream to an InsuranceDB file")
    flush.add_argument("--url", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    flush.add_argument("--db", required=True, help="the SQLite file of the InsuranceDB")
    flush.add_argument("--namespace", default="lab10:")
    flush.add_argument("--stream", default="__writes__")
    flush.add_argument("--group", default="flushers")
    flush.add_argument("--consumer", default=None)
    flush.add_argument("--batch-size", type=int, default=100)
    flush.add_argument("--interval", type=float, default=0.5, help="seconds")
    flush.add_argument("--min-idle", type=float, default=30.0, help="seconds before claiming")
    flush.add_argument("--latency-scale", type=float, default=1.0)
    flush.add_argument("--until-empty", action="store_true", help="exit once the stream is empty")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no Redis: pass --url or set REDIS_URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stats = asyncio.run(
        run_flusher(
            args.url,
            args.db,
            namespace=args.namespace,
            stream=args.stream,
            group=args.group,
            consumer=args.consumer,
            batch_size=args.batch_size,
            interval=args.interval,
            min_idle=args.min_idle,
            latency_scale=args.latency_scale,
            until_empty=args.until_empty,
        )
    )
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
