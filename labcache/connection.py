"""Part 1: which Redis the course talks to, and the lab's settings.

`connect()` tries, in order: `REDIS_URL` (or the lab's REDIS_HOST/REDIS_PORT/REDIS_PASSWORD)
from the environment or `.env`; a server on localhost:6379; a private redis-server that labcache
starts itself (see `labcache.embedded`). It says which one it picked and never prints a password.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import SplitResult, quote, urlsplit

import redis.asyncio as aioredis
from dotenv import find_dotenv, load_dotenv
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from labcache.cluster import cluster_client, cluster_requested, split_cluster_url
from labcache.embedded import RedisBinaryNotFound, RedisServer
from labcache.errors import LabcacheError

logger = logging.getLogger(__name__)

_SCHEMES = ("redis", "rediss", "unix")
_embedded: RedisServer | None = None
# Seconds a client from connect() waits for any reply: longer than the blocking reads labcache
# makes (write-behind XREADGROUP BLOCK, pub/sub polls of 1 s), far shorter than "forever".
SOCKET_TIMEOUT = 2.0


def reconnect_once() -> Retry:
    """The retry policy of clients from `connect()`: a broken connection is retried once, at once.

    After a Redis restart every pooled connection is stale and fails once when reused
    ("Connection closed by server"); redis-py's `from_url` retries 0 times, so each of those
    failures would reach the caller (and re-open a cache's circuit breaker). One retry on a
    fresh connection answers instead. Timeouts are not retried: that would double the wait on a
    slow or paused server. As with any retry, a command sent just before its connection broke
    may run twice: SET, UNLINK and the tag scripts are idempotent; a retried INCR bumps a
    generation once more, a retried XADD queues a write-behind entry twice (same value).
    """
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisUnavailable(LabcacheError, ConnectionError):
    """No Redis could be reached or started; the message says what was tried."""


def _positive_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} in the environment is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{name}={value} must be a positive number of seconds")
    return value


@dataclass(frozen=True)
class Settings:
    """The lab's `.env` variables (TTLs in seconds), with the lab's defaults."""

    redis_url: str | None = None
    default_ttl: int = 300
    quote_ttl: int = 600
    policy_ttl: int = 1800
    customer_ttl: int = 900
    agent_ttl: int = 3600
    namespace: str = "lab10:"

    @classmethod
    def from_env(cls, env_file: str | None = None) -> Settings:
        """Read os.environ after loading the nearest `.env` (or `env_file`), never overriding."""
        path = env_file or find_dotenv(usecwd=True)
        if path:
            load_dotenv(path, override=False)
        env = dict(os.environ)
        return cls(
            redis_url=redis_url_from_env(env),
            default_ttl=_positive_int(env, "DEFAULT_TTL", cls.default_ttl),
            quote_ttl=_positive_int(env, "QUOTE_CACHE_TTL", cls.quote_ttl),
            policy_ttl=_positive_int(env, "POLICY_CACHE_TTL", cls.policy_ttl),
            customer_ttl=_positive_int(env, "CUSTOMER_CACHE_TTL", cls.customer_ttl),
            agent_ttl=_positive_int(env, "AGENT_CACHE_TTL", cls.agent_ttl),
            namespace=env.get("CACHE_NAMESPACE", cls.namespace),
        )

    def ttl_for(self, kind: str) -> int:
        """The TTL for a data type (`policy`, `customer`, `quote`, `agent`), else DEFAULT_TTL."""
        return {
            "policy": self.policy_ttl,
            "customer": self.customer_ttl,
            "quote": self.quote_ttl,
            "agent": self.agent_ttl,
        }.get(kind, self.default_ttl)


def redis_url_from_env(env: dict[str, str]) -> str | None:
    """`REDIS_URL`, or a URL built from the lab's REDIS_HOST / REDIS_PORT / REDIS_PASSWORD."""
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST")
    if not host:
        return None
    port = env.get("REDIS_PORT") or "6379"
    password = env.get("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def redact(url: str) -> str:
    """The URL with its password (in the user part or a `password=` query) replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Rebuilt by hand: urlunsplit would turn `unix:///path` into `unix:/path`.
    tail = (f"?{query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"


def _split_or_none(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return None
    return parts


def validate_url(url: str) -> str:
    """Raise a ValueError that names the problem (never the password) for a malformed URL."""
    parts = _split_or_none(url)
    if parts is None:
        # Raised outside the except block: urlsplit's own error can quote part of a password,
        # and even a suppressed __context__ keeps it reachable (debuggers, error trackers).
        raise ValueError(
            f"malformed Redis URL {redact_loose(url)}: the port must be a number from 0 to 65535 "
            "(percent-encode / # ? @ : in a password, e.g. with urllib.parse.quote)"
        )
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"Redis URL {redact_loose(url)} must start with redis://, rediss:// or unix://"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"Redis URL {redact_loose(url)} has no host name")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"Redis URL {redact_loose(url)} has no socket path")
    return url


def redact_loose(url: str) -> str:
    """Redact even a URL that does not parse: drop everything between `//` and the last `@`."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    creds, _, rest = tail.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else creds
    return f"{head}://{user}:***@{rest}"


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """Whether a Redis at `host:port` answers PING right now (within 0.3 s, no password).

    What `connect()` asks of localhost:6379 before it starts a private server; a quick check
    that needs no client, e.g. in a notebook cell. Anything else listening there (another
    service, a Redis that wants a password) is False.
    """
    try:
        with socket.create_connection((host, port), timeout=0.3) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def embedded_server() -> RedisServer:
    """The process's private redis-server, started on first use and stopped at exit."""
    global _embedded
    if _embedded is None or not _embedded.running:
        _embedded = RedisServer().start()
    return _embedded


def stop_embedded_server() -> None:
    """Stop the process's private redis-server, if one is running, and remove its folder.

    Idempotent. It is stopped at interpreter exit anyway; this frees it sooner (a notebook
    done with it, a test that needs none running). The next `connect()` that needs one, or
    `embedded_server()`, starts a fresh server.
    """
    global _embedded
    server, _embedded = _embedded, None
    if server is not None:
        server.stop()


async def connect(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    announce: bool = True,
    **client_options: Any,
) -> aioredis.Redis:
    """Return a connected `redis.asyncio.Redis`, choosing the server as the module doc says.

    A cluster URL (`redis+cluster://host:port`, `...?cluster=true`, or any URL with
    LABCACHE_CLUSTER=1) gives a `redis.asyncio.RedisCluster` instead (see labcache.cluster).
    """
    tried: list[str] = []
    source = "argument"
    if url is None:
        url = (settings or Settings.from_env()).redis_url
        source = "REDIS_URL / .env"
    if url is None and cluster_requested(os.environ):
        raise RedisUnavailable(
            "LABCACHE_CLUSTER=1 needs REDIS_URL (or a url argument) naming a node of your "
            "cluster, e.g. redis+cluster://host:7000; labcache does not start a cluster itself "
            "(labcache.lab.local_cluster.LocalCluster does, for tests and notebook 08)"
        )
    if url is None and os.environ.get("LABCACHE_EMBEDDED") != "1":
        if redis_answers():
            url, source = "redis://127.0.0.1:6379/0", "localhost:6379"
        else:
            tried.append("localhost:6379 (nothing answered PING)")
    if url is None:
        try:
            server = embedded_server()
        except (RedisBinaryNotFound, RuntimeError, TimeoutError, OSError) as exc:
            tried.append(f"an embedded redis-server ({exc})")
            raise RedisUnavailable(_help(tried)) from None
        url, source = server.url, f"embedded redis-server {'.'.join(map(str, server.version))}"
    given = url
    url, on_cluster = split_cluster_url(url, os.environ)
    validate_url(url)
    # Every call gives up after SOCKET_TIMEOUT unless told otherwise (redis-py's own default
    # is 5 s); the caches bound their calls more tightly still (their `op_timeout`).
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30,
    }
    if not on_cluster:  # RedisCluster retries by its own rules (it also follows MOVED)
        options["retry"] = reconnect_once()
    options.update(client_options)
    if on_cluster:  # same command API; typed as Redis so that callers need no union
        client = cast(aioredis.Redis, cluster_client(url, **options))
    else:
        client = aioredis.from_url(url, **options)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        tried.append(f"{redact(given)} from {source} ({type(exc).__name__}: {exc})")
        raise RedisUnavailable(_help(tried)) from None
    message = f"labcache: using Redis at {redact(given)} ({source})"
    logger.info(message)
    if announce:
        print(message)
    return client


def _help(tried: list[str]) -> str:
    lines = "\n".join(f"  - {t}" for t in tried)
    return (
        f"no Redis could be reached or started. Tried:\n{lines}\n"
        "Fix: set REDIS_URL (e.g. redis://localhost:6379/0) in the environment or in .env, "
        "start a redis-server, or install one on PATH (apt-get install redis-server) so "
        "labcache can start its own."
    )


async def health_check(client: aioredis.Redis) -> dict[str, Any]:
    """PING round trip (ms) and the server facts a student should look at first."""
    import time

    start = time.perf_counter()
    await client.ping()
    rtt_ms = (time.perf_counter() - start) * 1000
    info = await client.info()
    return {
        "ping_ms": round(rtt_ms, 3),
        "redis_version": info.get("redis_version"),
        "mode": info.get("redis_mode"),
        "used_memory_human": info.get("used_memory_human"),
        "connected_clients": info.get("connected_clients"),
        "keys_in_db": (await client.dbsize()),
    }
