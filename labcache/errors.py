"""The base of every error labcache raises on purpose, and the errors with no other home.

Each error also keeps the built-in or redis-py class it refines (a `ValueTooLarge` is a
`ValueError`, a `CircuitOpen` a redis `ConnectionError`), so existing handlers still catch it;
`except LabcacheError` catches all of them and nothing else.
"""

from __future__ import annotations

import asyncio
import sys


class LabcacheError(Exception):
    """Raised by labcache on purpose: a refused input, an outage it detected, a timeout."""


if sys.version_info >= (3, 11):  # asyncio.TimeoutError is TimeoutError

    class LoadTimeout(LabcacheError, TimeoutError):
        """A read waited `hard_timeout` seconds for a load and had no stale copy to serve."""

else:  # pragma: no cover - Python 3.10: catchable as either timeout

    class LoadTimeout(LabcacheError, asyncio.TimeoutError, TimeoutError):
        """A read waited `hard_timeout` seconds for a load and had no stale copy to serve."""
