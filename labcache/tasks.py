"""Stopping background tasks for good (mistake 10: the lab's timers never stop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


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
