"""`labcache.lab.student.child_url`: a child process (a flusher, a fleet worker) reaches the same
server as the same user."""

from __future__ import annotations

import redis.asyncio as aioredis

from labcache.embedded import RedisServer
from labcache.lab.student import child_url


async def test_child_url_reaches_the_same_server(redis_url: str, namespace: str) -> None:
    client = aioredis.from_url(redis_url)
    child = aioredis.from_url(child_url(client))
    try:
        await client.set(namespace + "marker", "here")
        assert await child.get(namespace + "marker") == b"here"
    finally:
        await client.delete(namespace + "marker")
        await child.aclose()
        await client.aclose()


async def test_child_url_carries_a_user_and_a_password_with_odd_characters(
    fresh_server: RedisServer,
) -> None:
    admin = aioredis.from_url(fresh_server.url)
    password = "p@ss:w/rd?#"
    try:
        await admin.acl_setuser(
            "flusher", enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"]
        )
        user = aioredis.from_url(fresh_server.url, username="flusher", password=password)
        url = child_url(user)
        assert password not in url  # quoted, so the URL parses
        child = aioredis.from_url(url)
        assert await child.acl_whoami() == "flusher"
        await child.aclose()
        await user.aclose()
    finally:
        await admin.aclose()


def test_child_url_keeps_socket_database_and_credentials() -> None:
    tcp = aioredis.from_url("redis://alice:p%40ss@127.0.0.1:6390/2")
    assert child_url(tcp) == "redis://alice:p%40ss@127.0.0.1:6390/2"
    unix = aioredis.from_url("unix:///run/labcache/redis.sock?db=3")
    assert child_url(unix) == "unix:///run/labcache/redis.sock?db=3"
    no_user = aioredis.from_url("redis://:secret@localhost:6379/0")
    assert child_url(no_user) == "redis://:secret@localhost:6379/0"
    tls = "rediss://bob:pw@class.example:6380/0?ssl_cert_reqs=none&ssl_ca_certs=%2Fca%2Fca.crt"
    assert child_url(aioredis.from_url(tls)) == tls  # a TLS class server stays TLS
    assert child_url(aioredis.from_url("rediss://h:6380/0")) == "rediss://h:6380/0"
