"""How values become bytes in Redis. JSON by default: readable in redis-cli, safe to load.

(Pickle is deliberately not offered: loading a pickle from a shared Redis runs its code.)
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from labcache.errors import LabcacheError


class Serializer(Protocol):
    """Anything with `dumps(value) -> bytes` and `loads(bytes) -> value` can be plugged in."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class SerializationError(LabcacheError, TypeError):
    """A value that cannot be stored; the message names the key."""


class CorruptEntry(LabcacheError, ValueError):
    """Bytes under one of our keys that do not decode: treated as a miss and deleted."""


class JsonSerializer:
    """Compact JSON; NaN and non-JSON types are refused rather than stored as something else."""

    # One encoder, made once: json.dumps with options builds a new one on every call.
    _encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

    def dumps(self, value: Any) -> bytes:
        return self._encode(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def dumps_for(serializer: Serializer, key: str, value: Any) -> bytes:
    """Serialise `value`, turning any failure into a SerializationError that names `key`."""
    try:
        return serializer.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot cache {type(value).__name__} under {key!r}: {exc}"
        ) from exc


def loads_for(serializer: Serializer, key: str, data: bytes) -> Any:
    """Deserialise `data`, turning any failure into a CorruptEntry that names `key`."""
    try:
        return serializer.loads(data)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptEntry(f"corrupt cache entry under {key!r}: {exc}") from exc
