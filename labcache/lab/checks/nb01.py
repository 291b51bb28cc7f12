"""Notebook 01's exercise 2 check: a client that counts its round trips, and the keys' TTLs.

A round trip starts each time a connection sends to the server: one `await redis.set(...)` is
one, a pipeline's `execute()` sends all its queued commands at once, so it is one too. The
check hands the student's function a client built here, on a pool of its own whose connections
count every send (not the handshake of a new connection: AUTH/HELLO, SELECT), and reads the
count afterwards. Milliseconds would depend on the machine; the count does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)


@dataclass
class RoundTrips:
    """How many times the connections of one counting client sent commands to Redis."""

    count: int = 0


class _Counting(AbstractConnection):
    """A connection that adds one to `trips` per send, except while it connects."""

    trips: RoundTrips | None = None
    _connecting = False

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        self._connecting = True  # the handshake of a new connection is not the student's
        try:
            await super().on_connect_check_health(check_health=check_health)
        finally:
            self._connecting = False

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if self.trips is not None and not self._connecting:
            self.trips.count += 1
        await super().send_packed_command(command, check_health=check_health)


class _CountingTCP(_Counting, Connection):
    pass


class _CountingSSL(_Counting, SSLConnection):
    pass


class _CountingUnix(_Counting, UnixDomainSocketConnection):
    pass


def _counting_class(connection_class: type[AbstractConnection]) -> type[_Counting]:
    if issubclass(connection_class, UnixDomainSocketConnection):
        return _CountingUnix
    if issubclass(connection_class, SSLConnection):
        return _CountingSSL
    return _CountingTCP


class _CountingPool(ConnectionPool):
    """A pool whose every connection counts into one RoundTrips."""

    def __init__(self, trips: RoundTrips, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trips = trips

    def make_connection(self) -> AbstractConnection:
        made = super().make_connection()  # type: ignore[no-untyped-call]
        connection = cast(AbstractConnection, made)
        if isinstance(connection, _Counting):
            connection.trips = self.trips
        return connection


@asynccontextmanager
async def counting_client(
    like: aioredis.Redis,
) -> AsyncIterator[tuple[aioredis.Redis, RoundTrips]]:
    """A new client to `like`'s server, as the same user, and the count of its round trips.

    Pipelines of the client count too (they take a connection from its pool). The count starts
    at 0 once the client is connected; the client and its connections close on leaving.
    """
    pool = like.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["health_check_interval"] = 0  # no PING of its own before a command
    trips = RoundTrips()
    counting = _CountingPool(
        trips, connection_class=_counting_class(pool.connection_class), **kwargs
    )
    client = aioredis.Redis.from_pool(counting)
    try:
        await client.ping()  # connect now: the student's function starts on a ready connection
        trips.count = 0
        yield client, trips
    finally:
        await client.aclose()


async def ttls_left(client: aioredis.Redis, keys: list[str]) -> list[int]:
    """Each key's PTTL, read in one pipeline: -2 no such key, -1 never expires, else ms left."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
        left: list[int] = await pipe.execute()
    return left


def ttl_problems(left_ms: list[int], ttl: float) -> list[str]:
    """What is wrong with keys whose PTTLs are `left_ms`, all meant to expire within `ttl` s."""
    missing = sum(ms == -2 for ms in left_ms)
    forever = sum(ms == -1 for ms in left_ms)
    too_long = sum(ms > ttl * 1000 for ms in left_ms)
    problems = []
    if missing:
        problems.append(
            f"{missing} of the {len(left_ms)} keys are not in Redis: write every key in `keys`"
        )
    if forever:
        problems.append(f"{forever} of the keys never expire: give every SET ex=ttl")
    if too_long:
        problems.append(f"{too_long} of the keys expire later than ttl={ttl:g} s: use ex=ttl")
    return problems
