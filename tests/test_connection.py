"""Part 1: how connect() picks a Redis, and what it says when it cannot, against real servers."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from labcache.connection import (
    RedisUnavailable,
    Settings,
    connect,
    embedded_server,
    health_check,
    redact,
    redis_answers,
    redis_url_from_env,
    stop_embedded_server,
    validate_url,
)
from labcache.embedded import (
    SOCKET_PATH_MAX,
    RedisBinaryNotFound,
    RedisServer,
    find_redis_server,
    free_port,
)

# Every variable connect() or Settings.from_env() reads; `clean_env` unsets them for a test.
LAB_VARIABLES = (
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "LABCACHE_EMBEDDED",
    "REDIS_SERVER_BIN",
    "DEFAULT_TTL",
    "QUOTE_CACHE_TTL",
    "POLICY_CACHE_TTL",
    "CUSTOMER_CACHE_TTL",
    "AGENT_CACHE_TTL",
    "CACHE_NAMESPACE",
)
PASSWORD = "s3cret-Pa55"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No lab variable set, and a cwd with no `.env` (so the developer's own `.env` is not read).

    os.environ is restored in full afterwards: `load_dotenv` writes into it, and monkeypatch
    alone does not undo a variable that was unset when the test began.
    """
    saved = dict(os.environ)
    for name in LAB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield monkeypatch
    monkeypatch.undo()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def password_server() -> Iterator[RedisServer]:
    """A real redis-server on a free TCP port that requires a password."""
    with RedisServer(port=free_port(), extra_args=("--requirepass", PASSWORD)) as server:
        yield server


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


# --- resolution order --------------------------------------------------------------------------


async def test_redis_url_from_environment_wins(
    clean_env: pytest.MonkeyPatch, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("REDIS_URL", redis_url)
    clean_env.setenv("REDIS_HOST", "host.invalid")  # ignored: REDIS_URL comes first
    client = await connect()
    try:
        assert await client.ping() is True
        pool_kwargs = client.connection_pool.connection_kwargs
        assert str(pool_kwargs.get("port")) in redis_url
    finally:
        await _close(client)
    out = capsys.readouterr().out
    assert out.startswith("labcache: using Redis at ")
    assert "(REDIS_URL / .env)" in out


async def test_lab_host_port_password_build_the_url(
    clean_env: pytest.MonkeyPatch,
    password_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean_env.setenv("REDIS_HOST", "127.0.0.1")
    clean_env.setenv("REDIS_PORT", str(password_server.port))
    clean_env.setenv("REDIS_PASSWORD", PASSWORD)
    with caplog.at_level(logging.INFO, logger="labcache"):
        client = await connect()
    try:
        assert await client.ping() is True
        assert await client.config_get("port") == {"port": str(password_server.port)}
    finally:
        await _close(client)
    out = capsys.readouterr().out
    assert f"127.0.0.1:{password_server.port}" in out
    assert "***" in out
    assert PASSWORD not in out
    assert PASSWORD not in caplog.text


def test_password_with_url_special_characters_is_encoded() -> None:
    url = redis_url_from_env(
        {"REDIS_HOST": "cache.example.com", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss/w:rd#1"}
    )
    assert url == "redis://:p%40ss%2Fw%3Ard%231@cache.example.com:6380/0"
    assert redis_url_from_env({"REDIS_HOST": "h"}) == "redis://h:6379/0"
    assert redis_url_from_env({}) is None


async def test_special_character_password_reaches_a_real_server(
    clean_env: pytest.MonkeyPatch,
) -> None:
    password = "p@ss/w:rd#1?"
    with RedisServer(port=free_port(), extra_args=("--requirepass", password)) as server:
        clean_env.setenv("REDIS_HOST", "127.0.0.1")
        clean_env.setenv("REDIS_PORT", str(server.port))
        clean_env.setenv("REDIS_PASSWORD", password)
        client = await connect(announce=False)
        try:
            assert await client.ping() is True
        finally:
            await _close(client)


async def test_wrong_password_is_unavailable_and_not_printed(
    clean_env: pytest.MonkeyPatch,
    password_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv("REDIS_URL", f"redis://:wrong-{PASSWORD}@127.0.0.1:{password_server.port}/0")
    with pytest.raises(RedisUnavailable) as info:
        await connect()
    message = str(info.value)
    assert PASSWORD not in message
    assert "***" in message
    assert "Authentication" in message or "password" in message.lower()
    assert PASSWORD not in capsys.readouterr().out


async def test_explicit_url_argument_is_used(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await connect(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await _close(client)
    assert "(argument)" in capsys.readouterr().out


def test_localhost_probe_only_accepts_a_redis(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    assert redis_answers("127.0.0.1", port) is True
    assert redis_answers("127.0.0.1", free_port()) is False
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers PING
        assert redis_answers("127.0.0.1", silent.getsockname()[1]) is False


# --- malformed URLs and redaction --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://host:notaport", "port"),
        ("redis://host:99999", "port"),
        ("http://x", "redis://"),
        ("redis://", "host"),
        ("unix://", "socket"),
        (f"redis://:{PASSWORD}@host:notaport", "port"),
        (f"redis://user:{PASSWORD}@:6379/0", "host"),
        # A password with an unencoded "/" ends the host part early: the error must still not
        # echo any piece of it.
        ("redis://:hunter2/x@host:6379/0", "URL"),
    ],
)
def test_malformed_url_is_a_clear_value_error(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="Redis URL") as info:
        validate_url(url)
    message = str(info.value)
    assert says in message
    assert PASSWORD not in message
    assert "hunter2" not in message


async def test_malformed_url_from_environment_fails_before_connecting(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("REDIS_URL", f"redis://:{PASSWORD}@localhost:notaport/0")
    with pytest.raises(ValueError, match="port") as info:
        await connect()
    assert PASSWORD not in str(info.value)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{PASSWORD}@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            f"rediss://alice:{PASSWORD}@cache.example.com:6380/1",
            "rediss://alice:***@cache.example.com:6380/1",
        ),
        (f"redis://:{PASSWORD}@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        (f"redis://:p@ss{PASSWORD}@cache/0", "redis://:***@cache/0"),
        (
            f"unix:///run/redis.sock?db=0&password={PASSWORD}",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("redis://alice@cache:6379/0", "redis://alice@cache:6379/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_redact_hides_passwords(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_redact_survives_an_unparsable_port() -> None:
    assert PASSWORD not in redact(f"redis://:{PASSWORD}@cache:notaport/0")


# --- the private server ------------------------------------------------------------------------


async def test_embedded_server_uses_a_private_unix_socket(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("LABCACHE_EMBEDDED", "1")
    stop_embedded_server()  # so that connect() starts one
    client = await connect()
    server = embedded_server()  # the one connect() started: it is running, so no new one
    try:
        assert server.running
        assert await client.config_get("unixsocket") == {"unixsocket": str(server.socket_path)}
        assert server.directory is not None
        assert stat.S_IMODE(server.directory.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(server.socket_path.stat().st_mode)
        assert await client.config_get("port") == {"port": "0"}
        assert await client.ping() is True
        # A second connect() in the same process reuses the same server.
        again = await connect(announce=False)
        assert await again.config_get("unixsocket") == {"unixsocket": str(server.socket_path)}
        await _close(again)
    finally:
        await _close(client)
        stop_embedded_server()
    assert not server.running
    out = capsys.readouterr().out
    assert "unix://" in out and "embedded redis-server" in out
    assert not server.directory.exists(), "stop() should remove the folder it created"


async def test_unreachable_redis_url_names_what_was_tried_and_the_fix(
    clean_env: pytest.MonkeyPatch,
) -> None:
    closed = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    clean_env.setenv("REDIS_URL", closed)
    with pytest.raises(RedisUnavailable) as info:
        await connect()
    message = str(info.value)
    assert "Tried" in message
    assert redact(closed) in message and "REDIS_URL" in message
    assert "Fix:" in message and "REDIS_URL" in message.split("Fix:", 1)[1]
    assert PASSWORD not in message
    assert isinstance(info.value, ConnectionError)


async def test_no_server_binary_is_unavailable_with_a_hint(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("LABCACHE_EMBEDDED", "1")
    clean_env.setenv("REDIS_SERVER_BIN", str(tmp_path / "no-such-redis-server"))
    stop_embedded_server()  # else connect() would reuse a running one
    with pytest.raises(RedisBinaryNotFound):
        find_redis_server()
    with pytest.raises(RedisUnavailable) as info:
        await connect()
    message = str(info.value)
    assert "embedded redis-server" in message
    assert "no-such-redis-server" in message
    assert "apt-get install redis-server" in message


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults_are_the_labs(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert (settings.default_ttl, settings.quote_ttl, settings.policy_ttl) == (300, 600, 1800)
    assert settings.redis_url is None
    assert settings.namespace == "lab10:"
    assert settings.ttl_for("quote") == 600
    assert settings.ttl_for("policy") == 1800
    assert settings.ttl_for("something-else") == 300


def test_settings_read_ttl_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DEFAULT_TTL", "30")
    clean_env.setenv("QUOTE_CACHE_TTL", "60")
    clean_env.setenv("POLICY_CACHE_TTL", "90")
    settings = Settings.from_env()
    assert (settings.default_ttl, settings.quote_ttl, settings.policy_ttl) == (30, 60, 90)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_settings_reject_a_bad_ttl(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("DEFAULT_TTL", value)
    with pytest.raises(ValueError, match="DEFAULT_TTL"):
        Settings.from_env()


async def test_dotenv_in_the_working_directory_is_honoured(
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / ".env").write_text(
        f"# a student's .env\nREDIS_URL={redis_url}\nPOLICY_CACHE_TTL=77\nQUOTE_CACHE_TTL=11\n"
    )
    clean_env.setenv("QUOTE_CACHE_TTL", "22")  # the environment wins over the file
    settings = Settings.from_env()
    assert settings.policy_ttl == 77
    assert settings.quote_ttl == 22
    assert settings.redis_url == redis_url
    client = await connect()
    try:
        assert await client.ping() is True
    finally:
        await _close(client)
    assert "(REDIS_URL / .env)" in capsys.readouterr().out
    assert os.environ["POLICY_CACHE_TTL"] == "77"  # undone by clean_env after the test


async def test_health_check_returns_the_documented_keys(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        report = await health_check(client)
    finally:
        await _close(client)
    assert set(report) == {
        "ping_ms",
        "redis_version",
        "mode",
        "used_memory_human",
        "connected_clients",
        "keys_in_db",
    }
    assert report["ping_ms"] >= 0
    assert report["mode"] == "standalone"
    assert isinstance(report["keys_in_db"], int)
    assert str(report["redis_version"])[0].isdigit()


# --- RedisServer lifecycle (used by the fault tests) ---------------------------------------------


async def test_killed_server_restarts_on_the_same_address(fresh_server: RedisServer) -> None:
    url = fresh_server.url
    client = aioredis.from_url(url, socket_connect_timeout=1)
    try:
        await client.set("k", "v")
        fresh_server.kill()
        assert not fresh_server.running
        with pytest.raises((RedisConnectionError, OSError)):
            await client.get("k")
        fresh_server.start()
        assert fresh_server.running and fresh_server.url == url
        # Same address, new process: the client reconnects, and nothing was kept on disk.
        assert await client.get("k") is None
        assert await client.ping() is True
    finally:
        await _close(client)


def test_stop_is_idempotent_and_cleans_up(tmp_path: Path) -> None:
    server = RedisServer().start()
    directory = server.directory
    assert directory is not None and server.running
    server.stop()
    server.stop()
    assert not server.running
    assert not directory.exists()
    # A folder the caller chose is kept.
    mine = tmp_path / "mine"
    with RedisServer(directory=mine) as chosen:
        assert chosen.running
        deep = len(os.fsencode(chosen.socket_path)) > SOCKET_PATH_MAX  # a long TMPDIR: TCP
        assert chosen.socket_path.exists() != deep
    assert mine.is_dir() and not chosen.socket_path.exists()
