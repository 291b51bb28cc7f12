"""Redis glob semantics: `labcache.keys.glob_match` must agree with the server's SCAN MATCH.

L1 eviction by pattern uses glob_match, so any disagreement leaves stale L1 entries (a pattern the
server matches but we do not) or drops good ones. Every expectation here is checked against the
real redis-server, not only written down.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labcache.keys import glob_escape, glob_match

_prefixes = itertools.count()
# Deterministic runs (the course allows no unseeded randomness) on the suite's own server.
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


def server_matches(client: redis.Redis, pattern: str, keys: list[str]) -> set[str]:
    """Create `keys` under a fresh literal prefix, SCAN MATCH prefix+pattern, return the hits."""
    prefix = f"glob{os.getpid()}-{next(_prefixes)}:"
    full = {prefix + k: k for k in keys}
    try:
        if full:
            client.mset(dict.fromkeys(full, b"1"))
        found = client.scan_iter(match=prefix + pattern, count=1000)
        return {full[k.decode()] for k in found if k.decode() in full}
    finally:
        if full:
            client.unlink(*full)


def local_matches(pattern: str, keys: list[str]) -> set[str]:
    return {k for k in keys if glob_match(pattern, k)}


# (pattern, key, does SCAN MATCH return it?)
MATRIX = [
    ("*", "policy:1", True),
    ("*", "é", True),
    ("policy:*", "policy:12345", True),
    ("policy:*", "xpolicy:12345", False),
    ("policy:1*", "policy:19", True),
    ("policy:1*", "xpolicy:19", False),  # mistake 4: an unanchored regex matches this
    ("policy:1*", "policy:2", False),
    ("h?llo", "hello", True),
    ("h?llo", "hllo", False),
    ("h?llo", "heello", False),
    ("h[abc]llo", "hbllo", True),
    ("h[abc]llo", "hdllo", False),
    ("h[^e]llo", "hallo", True),
    ("h[^e]llo", "hello", False),
    ("h[a-c]llo", "hbllo", True),
    ("h[a-c]llo", "hdllo", False),
    ("h[c-a]llo", "hbllo", True),  # a reversed range is swapped, not empty
    ("h[c-a]llo", "hdllo", False),
    ("h\\*llo", "h*llo", True),  # an escaped star is a literal star
    ("h\\*llo", "hello", False),
    ("h\\?llo", "h?llo", True),
    ("h\\?llo", "hallo", False),
    ("a\\[b", "a[b", True),
    ("[\\]]", "]", True),
    ("[[]", "[", True),
    ("[]]", "]", False),  # `[]` is an empty class: nothing matches it
    ("[^]", "x", True),  # and its negation matches any byte
    ("h[el", "he", True),  # an unclosed `[` runs to the end of the pattern
    ("h[el", "hel", False),
    ("[", "[", False),
    ("ab\\", "ab\\", True),  # a trailing backslash is a literal backslash
    ("caf?", "café", False),  # é is two bytes; `?` is one
    ("caf??", "café", True),
    ("caf[é]", "café", False),  # a class matches one byte, not one character
    ("caf[é]?", "café", True),
    ("[a-é]", "\x01", True),  # signed char on x86-64: the range is 0xc3..'a'
    ("[a-é]", "b", False),
    ("日本*", "日本語", True),
    ("customer:*", "customer:60001:policies", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), MATRIX)
def test_agreement_matrix(client: redis.Redis, pattern: str, key: str, expected: bool) -> None:
    assert glob_match(pattern, key) is expected
    assert (key in server_matches(client, pattern, [key])) is expected


GLOB_CHARS = st.sampled_from(["a", "b", "-", "^", "*", "?", "[", "]", "\\", "é", "z"])
KEY_CHARS = st.sampled_from(["a", "b", "z", "-", "^", "*", "?", "[", "]", "\\", "é", "\x01"])


@PROPERTY
@given(
    pattern=st.text(GLOB_CHARS, max_size=8),
    keys=st.lists(st.text(KEY_CHARS, min_size=1, max_size=6), min_size=1, max_size=10, unique=True),
)
def test_glob_match_agrees_with_scan_match(
    client: redis.Redis, pattern: str, keys: list[str]
) -> None:
    assert local_matches(pattern, keys) == server_matches(client, pattern, keys)


@PROPERTY
@given(
    text=st.text(st.one_of(GLOB_CHARS, st.characters(codec="utf-8")), min_size=1, max_size=8),
    suffixes=st.lists(st.text(KEY_CHARS, max_size=3), max_size=5),
    others=st.lists(st.text(KEY_CHARS, min_size=1, max_size=6), max_size=5),
)
def test_escaped_text_matches_only_itself(
    client: redis.Redis, text: str, suffixes: list[str], others: list[str]
) -> None:
    keys = list(dict.fromkeys([text, *(text + s for s in suffixes), *others]))
    exact = glob_escape(text)
    assert local_matches(exact, keys) == server_matches(client, exact, keys) == {text}
    prefix = exact + "*"
    expected = {k for k in keys if k.startswith(text)}
    assert local_matches(prefix, keys) == server_matches(client, prefix, keys) == expected


@pytest.mark.parametrize("policy_id", ["1*", "1[0-9]", "1?", "1\\", "[", "]x"])
def test_an_id_with_glob_characters_cannot_over_match(client: redis.Redis, policy_id: str) -> None:
    keys = [f"policy:{policy_id}:summary", "policy:1:summary", "policy:10:summary", "policy:1x"]
    wanted = {f"policy:{policy_id}:summary"}
    pattern = f"policy:{glob_escape(policy_id)}:*"
    assert server_matches(client, pattern, keys) == local_matches(pattern, keys) == wanted
    # Unescaped, the id is itself a pattern: it over- or under-matches (only `]x` is harmless).
    naive = f"policy:{policy_id}:*"
    assert (server_matches(client, naive, keys) == wanted) is (policy_id == "]x")
