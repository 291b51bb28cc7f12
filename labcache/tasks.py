"""Stopping background tasks for good (mistake 10: the lab's timers never stop)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The package's own folder, resolved (an editable install, a symlinked checkout).
PACKAGE_DIR = Path(__file__).resolve().parent


def running_tasks(loop: asyncio.AbstractEventLoop | None = None) -> set[asyncio.Task[Any]]:
    """The loop's unfinished tasks running labcache's own code, found by folder, not substring.

    `"labcache" in code.co_filename` also matches ipykernel's tasks when the venv is inside a
    clone named labcache (what `git clone .../labcache` gives).
    """
    found: set[asyncio.Task[Any]] = set()
    for task in asyncio.all_tasks(loop):
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and _in_package(code.co_filename):
            found.add(task)
    return found


@functools.lru_cache(maxsize=1024)
def _in_package(filename: str) -> bool:
    if filename.startswith("<"):  # <string>, <frozen ...>: not a file
        return False
    return Path(filename).resolve().is_relative_to(PACKAGE_DIR)


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any] | None]) -> None:
    """Cancel tasks and wait until they have ended, cancelling again any that ignored it.

    Again, because on Python 3.11 `asyncio.wait_for` (which redis-py wraps around each command
    when a socket timeout is set) can drop a cancel that lands as the command completes, and
    the task would then run on forever. A task's own exception is left for its owner to read.
    """
    while pending := {t for t in tasks if t is not None and not t.done()}:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.05)


class BackgroundListener:
    """A listener that runs as one background task: `start()` returns once it is ready,
    `stop()` ends it for good, and `wait_received(n)` awaits the messages it has applied
    (so tests and notebooks wait for the event, never for a guessed time).

    Subclasses write `_run()` (or use `labcache.listener.PubSubListener`, which writes it),
    set `self._ready` when listening, and call `_applied()`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._progress = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def listening(self) -> bool:
        """Subscribed right now (False while it reconnects)."""
        return self._ready.is_set() and self.running

    async def start(self, timeout: float = 5.0) -> None:
        if not self.running:
            self._ready.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until the listener listens, or its task ends (re-raising what it raised).

        TimeoutError after `timeout` seconds; the listener itself goes on trying.
        """
        task = self._task
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            waits = {ready} if task is None else {ready, task}
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if not done:
            raise TimeoutError(f"{self.name} was not listening after {timeout:g}s")
        if ready in done or task is None or task.cancelled():
            return
        failed = task.exception()
        if failed is not None:
            raise failed

    async def stop(self) -> None:
        """Cancel the task and wait for it: nothing outlives its owner."""
        task, self._task = self._task, None
        await cancel_and_wait([task])
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.warning("%s had failed: %r", self.name, task.exception())

    async def wait_received(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` messages have been applied (for tests and demos)."""
        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(lambda: self.received >= count), timeout)

    async def _applied(self) -> None:
        async with self._progress:
            self.received += 1
            self._progress.notify_all()

    async def _run(self) -> None:
        raise NotImplementedError
