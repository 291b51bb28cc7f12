"""Cache keys: namespaces, canonical keys for structured requests, and Redis glob semantics.

The lab built quote keys with `JSON.stringify(request)`, so `{age, type}` and `{type, age}` were
two cache entries (mistake 11). Here a request is canonicalised before it becomes a key. And the
lab matched memory keys with an unanchored regex (mistake 4); here L1 uses Redis's own glob rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

GLOB_SPECIAL = frozenset("*?[]\\")


def validate_key(key: object) -> str:
    """Return `key` if it is a usable cache key, else raise a ValueError/TypeError that says why."""
    if not isinstance(key, str):
        raise TypeError(f"cache key must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("cache key must not be empty")
    if len(key) > 1024:
        raise ValueError(f"cache key is {len(key)} characters; the limit is 1024: {key[:40]!r}...")
    return key


def canonical_json(request: Mapping[str, Any]) -> str:
    """The same mapping in any field order gives the same text (nested mappings too)."""
    return json.dumps(
        request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def request_key(kind: str, request: Mapping[str, Any]) -> str:
    """A short, stable key for a structured request: `quote:` + 16 hex digits of its digest."""
    digest = hashlib.sha256(canonical_json(request).encode()).hexdigest()[:16]
    return f"{kind}:{digest}"


def glob_escape(text: str) -> str:
    """Escape user input so it matches itself literally inside a Redis glob pattern."""
    return "".join("\\" + ch if ch in GLOB_SPECIAL else ch for ch in text)


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[bytes]:
    """Compile a Redis MATCH pattern to an anchored bytes regex with the server's semantics.

    This follows `stringmatchlen` in Redis's util.c byte for byte: `*`, `?`, `[...]` with `^`
    negation and `a-z` ranges (a reversed range is swapped), backslash escapes, an unclosed
    bracket running to the end of the pattern. Matching is on UTF-8 bytes, as on the server, and
    range ends compare as C `char`, which is signed on x86-64 (and Apple arm64) builds: there
    `[a-\\xc3]` is the range 0xc3..a, i.e. bytes 0x00-0x61 and 0xc3-0xff.
    """
    p = pattern.encode()
    out: list[bytes] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == ord("*"):
            while i + 1 < n and p[i + 1] == ord("*"):
                i += 1
            out.append(b".*")
        elif c == ord("?"):
            out.append(b".")
        elif c == ord("["):
            i, cls = _bracket(p, i + 1)
            out.append(cls)
        elif c == ord("\\") and i + 1 < n:
            i += 1
            out.append(re.escape(p[i : i + 1]))
        else:
            out.append(re.escape(p[i : i + 1]))
        i += 1
    return re.compile(b"".join(out) + rb"\Z", re.DOTALL)


def _bracket(p: bytes, i: int) -> tuple[int, bytes]:
    """Parse a `[...]` class from just after its `[`; return its last index and a regex."""
    n = len(p)
    negate = i < n and p[i] == ord("^")
    if negate:
        i += 1
    ranges: list[tuple[int, int]] = []
    while True:
        if i < n and p[i] == ord("\\") and n - i >= 2:
            i += 1
            ranges.append((p[i], p[i]))
        elif i < n and p[i] == ord("]"):
            break
        elif i >= n:
            i -= 1
            break
        elif n - i >= 3 and p[i + 1] == ord("-"):
            ranges.extend(_signed_range(p[i], p[i + 2]))
            i += 2
        else:
            ranges.append((p[i], p[i]))
        i += 1
    if not ranges:
        return i, (b"." if negate else b"(?!)")
    body = b"".join(b"\\x%02x-\\x%02x" % r for r in ranges)
    return i, b"[" + (b"^" if negate else b"") + body + b"]"


def _signed_range(a: int, b: int) -> list[tuple[int, int]]:
    """The unsigned byte ranges of `[a-b]` when the server compares bytes as signed chars."""
    lo, hi = sorted(x - 256 if x > 127 else x for x in (a, b))
    if hi < 0 or lo >= 0:
        return [(lo % 256, hi % 256)]
    return [(0, hi), (lo + 256, 255)]  # e.g. [a-\xc3]: 0x00-0x61 and 0xc3-0xff


def glob_match(pattern: str, key: str) -> bool:
    """True when Redis's `SCAN ... MATCH pattern` would return `key`."""
    return glob_to_regex(pattern).match(key.encode()) is not None
