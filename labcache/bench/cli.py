"""`python -m labcache.bench`: start a private Redis, run every scenario, print and save."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import redis.asyncio as aioredis

from labcache.bench.core import Check, Ctx, Plan, Result, Row
from labcache.bench.peers import POOL_SIZE, versions
from labcache.bench.report import Report, checks_text, table, write_files
from labcache.embedded import RedisServer, find_redis_server, free_port, server_version
from labcache.lab.data import InsuranceDB, Latency

logger = logging.getLogger(__name__)
Scenario = Callable[[Ctx], Awaitable[Result]]

# number -> (title, "module:function"); imported when run, so a scenario whose library module
# is missing reports "not available" instead of breaking the others.
SCENARIOS: dict[str, tuple[str, str]] = {
    "1": ("L1 hit", "labcache.bench.hits:l1_hit"),
    "2": ("L2 hit", "labcache.bench.hits:l2_hit"),
    "3": ("miss + load + set", "labcache.bench.hits:miss"),
    "4": ("warming", "labcache.bench.bulk:warming"),
    "5": ("pattern invalidation", "labcache.bench.bulk:invalidation"),
    "6": ("stampede", "labcache.bench.load:stampede"),
    "7": ("Zipf workload", "labcache.bench.load:workload"),
    "8": ("peers on the hit paths", "labcache.bench.versus:peers_l1,peers_l2"),
    "9": ("memory", "labcache.bench.footprint:memory"),
}


@dataclass
class Config:
    plan: Plan = field(default_factory=Plan.full)
    url: str | None = None  # None: start a private redis-server on a free loopback port
    only: Sequence[str] = tuple(SCENARIOS)
    out_dir: Path | None = Path("bench-results")
    echo: bool = True  # print progress, the table and the checks
    profile: str | None = None  # a path to profile (labcache.bench.profile.PATHS)


def _say(config: Config, text: str) -> None:
    if config.echo:
        print(text, file=sys.stderr, flush=True)


async def _load_data(n: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    db = InsuranceDB(latency=Latency.zero())
    try:
        policies = [await db.get_policy(p) for p in db.policy_ids()[:n]]
        customers = [await db.get_customer(c) for c in db.customer_ids()[:n]]
    finally:
        db.close()
    return [p for p in policies if p], [c for c in customers if c]


def _resolve(spec: str) -> list[Scenario]:
    module_name, names = spec.split(":")
    module = importlib.import_module(module_name)
    return [getattr(module, name) for name in names.split(",")]


async def _run_one(ctx: Ctx, number: str, config: Config) -> Result:
    title, spec = SCENARIOS[number]
    label = f"{number} {title}"
    started = time.perf_counter()
    _say(config, f"running {label} ...")
    out = Result()
    try:
        functions = _resolve(spec)
    except ImportError as exc:  # a library module still being written, or a peer missing
        out.skipped(label, "(scenario)", f"not available: {exc}")
        return out
    for fn in functions:
        try:
            got = await fn(ctx)
        except ImportError as exc:  # the scenario needs a module that is not there (yet)
            out.skipped(label, fn.__name__, f"not available: {exc}")
            continue
        except Exception as exc:
            logger.exception("scenario %s failed", label)
            out.rows.append(Row(label, fn.__name__, status="error",
                                notes=f"{type(exc).__name__}: {exc}"[:300]))  # fmt: skip
            out.checks.append(Check(label, f"{fn.__name__} ran", False, repr(exc)[:300]))
            continue
        out.rows += got.rows
        out.checks += got.checks
    _say(config, f"  {label}: {time.perf_counter() - started:.1f} s")
    return out


async def run(config: Config) -> Report:
    """Run the selected scenarios against one Redis, in one process; return the report."""
    server: RedisServer | None = None
    url = config.url
    binary_version: tuple[int, ...] | None = None
    if url is None:
        binary = find_redis_server()
        binary_version = server_version(binary)
        extra = ("--enable-debug-command", "local") if binary_version >= (7,) else ()
        server = RedisServer(port=free_port(), binary=binary, extra_args=extra).start()
        url = server.url
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=60)
    redis = aioredis.Redis(connection_pool=pool)
    started = time.perf_counter()
    load_before = os.getloadavg()
    report = Report()
    try:
        info = await redis.info("server")
        version = tuple(int(x) for x in str(info["redis_version"]).split("."))
        policies, customers = await _load_data(50)
        ctx = Ctx(url, redis, config.plan, f"bench:{os.getpid()}:", version, policies, customers)
        report.meta = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "plan": asdict(config.plan),
            "scenarios": list(config.only),
            "redis_server": info["redis_version"],
            "redis_url": "private redis-server (TCP loopback)" if server else "--url",
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
            "versions": versions(),
            "load_average_before": [round(x, 2) for x in load_before],
        }
        if config.profile is not None:
            from labcache.bench.profile import profile

            report.meta["profile"] = await profile(ctx, config.profile)
        else:
            for number in config.only:
                got = await _run_one(ctx, number, config)
                report.rows += got.rows
                report.checks += got.checks
        await ctx.clean()
    finally:
        await redis.aclose()
        await pool.disconnect()
        if server is not None:
            server.stop()
    report.meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report.meta["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labcache.bench",
        description="labcache against the physical limits and the peer libraries, in one run.",
    )
    p.add_argument("--quick", action="store_true", help="every scenario small (well under 1 min)")
    p.add_argument("--plan", choices=("full", "quick", "tiny"), help="sizes (default: full)")
    p.add_argument("--url", help="use this Redis instead of starting a private one")
    p.add_argument("--only", help="comma-separated scenario numbers, e.g. 1,2,8")
    p.add_argument("--out", default="bench-results", help="folder for the JSON and CSV")
    p.add_argument("--no-files", action="store_true", help="print only")
    p.add_argument(
        "--profile",
        choices=("l1", "l2", "miss", "warm"),
        help="instead of the scenarios, profile one labcache path and print where time goes",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plan_name = args.plan or ("quick" if args.quick else "full")
    plan = {"full": Plan.full, "quick": Plan.quick, "tiny": Plan.tiny}[plan_name]()
    only = tuple(s.strip() for s in args.only.split(",")) if args.only else tuple(SCENARIOS)
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    out_dir = None if args.no_files or args.profile else Path(args.out)
    config = Config(plan, args.url, only, out_dir, profile=args.profile)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # A `timeout`/`kill` must still stop the private redis-server and the PING probe.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        report = asyncio.run(run(config))
    finally:
        signal.signal(signal.SIGTERM, previous)
    meta = report.meta
    if args.profile:
        print(meta["profile"])
        return 0
    print(
        f"labcache bench, plan {plan.name}: {meta.get('date')}, {meta.get('machine')}, Python "
        f"{meta.get('python')}, redis-server {meta.get('redis_server')}, load average "
        f"{meta.get('load_average_before')} → {meta.get('load_average_after')}, "
        f"{meta.get('seconds')} s"
    )
    print(table(report.rows))
    print()
    print(checks_text(report.checks))
    if config.out_dir is not None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        paths = write_files(report, config.out_dir, f"bench-{plan.name}-{stamp}")
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if report.ok else 1
