"""`running_tasks()`: labcache's own tasks, found by the package's folder (issue 18, part 1).

A clone is usually a folder named labcache with the venv inside it, so `"labcache" in
co_filename` also matched ipykernel's tasks there, and notebook 05's task lists changed.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from labcache.backplane import Backplane
from labcache.connection import reconnect_once
from labcache.embedded import RedisServer
from labcache.listener import PubSubListener
from labcache.tasks import PACKAGE_DIR, cancel_and_wait, running_tasks

# Code that lives under a folder named labcache but is not the package (like a venv's ipykernel).
ELSEWHERE = """
import asyncio

async def idle():
    await asyncio.sleep(3600)
"""


def _import_from(path: Path, name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_dir_is_the_package() -> None:
    assert (PACKAGE_DIR / "tasks.py").is_file()
    assert PACKAGE_DIR.is_absolute()


def _backplane(redis: aioredis.Redis, namespace: str) -> Backplane:
    """A real labcache background task (a BackgroundListener) that does nothing on messages."""
    ignore = lambda _arg: None  # noqa: E731
    return Backplane(redis, namespace + "__invalidate__", on_keys=ignore, on_pattern=ignore,
                     on_reset=ignore)  # fmt: skip


async def test_lists_labcache_tasks_not_code_in_other_folders_named_labcache(
    tmp_path: Path, redis: aioredis.Redis, namespace: str
) -> None:
    folder = tmp_path / "labcache" / "site-packages" / "labcache_elsewhere"
    folder.mkdir(parents=True)
    (folder / "elsewhere.py").write_text(ELSEWHERE, encoding="utf-8")
    elsewhere = _import_from(folder / "elsewhere.py", "labcache_elsewhere_for_test")

    stranger = asyncio.create_task(elsewhere.idle(), name="stranger")
    backplane = _backplane(redis, namespace)
    await backplane.start()
    try:
        # What the substring test saw: both tasks' code has "labcache" in its path.
        filename = stranger.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        assert "labcache" in filename
        names = {t.get_name() for t in running_tasks()}
        assert backplane.name in names
        assert "stranger" not in names
        assert asyncio.current_task() not in running_tasks()  # this test's own code
    finally:
        await backplane.stop()
        await cancel_and_wait([stranger])
    assert {t.get_name() for t in running_tasks()} == set()


async def test_ended_tasks_are_not_listed(redis: aioredis.Redis, namespace: str) -> None:
    backplane = _backplane(redis, namespace)
    await backplane.start()
    await backplane.stop()
    assert backplane.name not in {t.get_name() for t in running_tasks()}


# -- the one pub/sub listener every part uses (issue 16) --------------------------------------


class Recorder(PubSubListener):
    """A PubSubListener that keeps what it hears and counts its lost connections."""

    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        super().__init__(redis, channel, f"recorder:{channel}")
        self.heard: list[bytes] = []
        self.losses = 0
        self.lost = asyncio.Event()

    async def _handle(self, data: bytes) -> None:
        self.heard.append(data)
        await self._applied()

    def _lost(self, exc: BaseException) -> None:
        self.losses += 1
        self.lost.set()


class Refused(Recorder):
    """Its subscription step gets an error reply, which it declares fatal."""

    fatal = (ResponseError,)

    async def _subscribe(self, pubsub: Any) -> None:
        await self.redis.execute_command("NO-SUCH-COMMAND")


async def _subscribers(client: aioredis.Redis, channel: str) -> int:
    return int(dict(await client.pubsub_numsub(channel))[channel.encode()])


async def test_pubsub_listener_reconnects_after_an_outage_and_closes_its_pubsub(
    fresh_server: RedisServer, namespace: str
) -> None:
    # As clients from connect() are: after the restart, the publisher's pooled connection is
    # stale (redis-py 8.1 does not retry it by itself).
    client = aioredis.from_url(fresh_server.url, retry=reconnect_once())
    channel = namespace + "events"
    listener = Recorder(client, channel)
    await listener.start()
    try:
        await client.publish(channel, "before")
        await listener.wait_received(1)
        fresh_server.kill()
        await asyncio.wait_for(listener.lost.wait(), 10)  # redis-py's own retries gave up
        assert not listener.listening
        await asyncio.to_thread(fresh_server.start)  # same address, a new server
        await listener.wait_ready(10)  # subscribed again by the loop's backoff
        await client.publish(channel, "after")
        await listener.wait_received(2)
        assert listener.heard == [b"before", b"after"] and listener.losses >= 1
    finally:
        await listener.stop()
    assert not listener.running
    assert await _subscribers(client, channel) == 0  # its pubsub was closed, not left behind
    await client.aclose()


async def test_a_fatal_error_ends_the_listener_and_start_returns(
    redis: aioredis.Redis, namespace: str
) -> None:
    listener = Refused(redis, namespace + "events")
    await listener.start()  # returns: the owner reads `failure` instead of waiting forever
    assert isinstance(listener.failure, ResponseError)
    assert not listener.running and listener.losses == 0  # no retry of a refusal
    await listener.stop()
