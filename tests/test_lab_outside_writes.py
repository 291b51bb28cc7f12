"""labcache.lab.outside_writes: writes from outside labcache land on the same server, in
labcache's record format, with redis-cli and with the second-client fallback."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from labcache.lab.outside_writes import OutsideWriter, cli_args, find_redis_cli, second_client
from labcache.multilevel import MultiLevelCache


async def _never() -> None:
    raise AssertionError("the record was written: the loader must not run")


@pytest.mark.parametrize("use_cli", [True, False], ids=["redis-cli", "second-client"])
async def test_an_outside_set_is_a_record_labcache_reads(
    redis: aioredis.Redis, namespace: str, use_cli: bool
) -> None:
    writer = OutsideWriter(redis, use_cli=use_cli)
    if use_cli and writer.cli is None:
        pytest.skip("no redis-cli binary on this machine")
    assert await writer.set(namespace + "policy:1", {"premium": 1950.0}, ttl=60) == "OK"
    async with MultiLevelCache(redis, namespace=namespace, backplane=False) as cache:
        assert await cache.get("policy:1", _never) == {"premium": 1950.0}
    assert (await redis.get(namespace + "policy:1")).startswith(b"lc:")  # labcache's format


async def test_the_fallback_is_its_own_connection(redis: aioredis.Redis) -> None:
    async with second_client(redis) as other:
        assert other.connection_pool is not redis.connection_pool
        mine = await redis.client_id()
        assert await other.client_id() != mine
        assert await other.ping()


def test_cli_args_keep_the_password_off_the_command_line() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=6390, username="student", password="s3cret")
    args, env = cli_args(client)
    assert args == ["-h", "127.0.0.1", "-p", "6390", "-n", "0", "--user", "student"]
    assert "s3cret" not in args and env is not None and env["REDISCLI_AUTH"] == "s3cret"
    assert cli_args(aioredis.Redis(unix_socket_path="/x/r.sock"))[0][:2] == ["-s", "/x/r.sock"]


def test_str_names_the_writer_without_a_path(redis: aioredis.Redis) -> None:
    text = str(OutsideWriter(redis))
    assert text.startswith("outside writer: ")
    if find_redis_cli() is not None:
        assert "/" not in text.split()[2]
