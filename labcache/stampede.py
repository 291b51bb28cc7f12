"""Stampede (thundering herd) prevention: many callers, one load.

The lab's checklist ticks stampede protection; its code has none (mistake 13).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Concurrent calls for one key share one run of the function (in one process).

    The run is its own task, so a caller that is cancelled does not cancel it for the others;
    its result or exception reaches every caller; the key is forgotten when the run ends.
    """

    def __init__(self) -> None:
        self._runs: dict[str, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return `(result, shared)`; `shared` is True when this call joined a run in flight."""
        run = self._runs.get(key)
        shared = run is not None
        if run is None:
            run = asyncio.ensure_future(fn())
            self._runs[key] = run
            run.add_done_callback(lambda done: self._forget(key, done))
        result: T = await asyncio.shield(run)
        return result, shared

    def _forget(self, key: str, done: asyncio.Future[Any]) -> None:
        if self._runs.get(key) is done:
            del self._runs[key]
        if not done.cancelled():
            done.exception()  # marks it retrieved even if every caller was cancelled
