"""Issue 15: each student's prefix on a shared Redis, the ACL that fences it, and the exercises."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from labcache.connection import Settings
from labcache.embedded import RedisServer
from labcache.lab import exercises
from labcache.lab.exercises import exercise, self_check, solution
from labcache.lab.student import (
    STUDENT_FILE,
    BadStudentName,
    acl_rules,
    check_name,
    class_setup,
    main,
    student,
)
from labcache.multilevel import MultiLevelCache

SETTINGS = Settings()  # the lab's defaults: namespace lab10:


# -- who the student is ----------------------------------------------------------------------


def test_student_from_the_environment_names_every_prefix(tmp_path: Path) -> None:
    me = student({"LABCACHE_STUDENT": "alice"}, folder=tmp_path, settings=SETTINGS)
    assert (me.name, me.source, me.prefix) == ("alice", "LABCACHE_STUDENT", "lab10:alice:")
    assert me.namespace("nb02") == "lab10:alice:nb02:"
    assert not (tmp_path / STUDENT_FILE).exists()  # nothing generated when the name is given
    other = student({"LABCACHE_STUDENT": "bob"}, settings=Settings(namespace="course:"))
    assert other.namespace("nb02") == "course:bob:nb02:"


def test_generated_name_is_kept_and_differs_between_checkouts(tmp_path: Path) -> None:
    first, second = tmp_path / "alice-checkout", tmp_path / "bob-checkout"
    first.mkdir(), second.mkdir()
    a = student({}, folder=first, settings=SETTINGS)
    assert a.source == str(first / STUDENT_FILE)
    assert student({}, folder=first, settings=SETTINGS) == a  # stable across runs
    assert (first / STUDENT_FILE).read_text().strip() == a.name
    assert student({}, folder=second, settings=SETTINGS).name != a.name
    check_name(a.name)


@pytest.mark.parametrize(
    "name", ["", "a:b", "a*", "al?ce", "[ab]", "a b", "back\\slash", "-lead", "x" * 41, "ünï"]
)
def test_names_that_cannot_be_a_prefix_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(BadStudentName, match="LABCACHE_STUDENT"):
        check_name(name)
    if name:
        with pytest.raises(BadStudentName):
            student({"LABCACHE_STUDENT": name}, folder=tmp_path, settings=SETTINGS)


def test_a_bad_kept_name_names_its_file(tmp_path: Path) -> None:
    (tmp_path / STUDENT_FILE).write_text("not:allowed\n")
    with pytest.raises(BadStudentName, match=STUDENT_FILE):
        student({}, folder=tmp_path, settings=SETTINGS)


def test_cli_prints_class_setup_and_refuses_bad_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "alice", "bob", "--host", "class.example"]) == 0
    out = capsys.readouterr().out
    assert out.count("ACL SETUSER ") == 2 and "~lab10:alice:* &lab10:alice:*" in out
    assert "REDIS_URL=redis://bob:" in out and "@class.example:6379/0" in out
    assert main(["acl", "bad:name"]) == 2
    assert "bad:name" in capsys.readouterr().err


# -- the ACL an instructor gives each student --------------------------------------------------


@pytest.fixture
def classroom(fresh_server: RedisServer) -> dict[str, str]:
    """Two students' ACL users, made from the lines `class_setup` prints; name -> URL."""
    admin = redis.Redis(host="127.0.0.1", port=fresh_server.port)
    urls = {}
    for line in class_setup(["alice", "bob"], "127.0.0.1", fresh_server.port).splitlines():
        if line.startswith("ACL SETUSER"):
            admin.execute_command(*line.split())
        elif "REDIS_URL=" in line:
            url = line.split("REDIS_URL=")[1]
            urls[url.split("//")[1].split(":")[0]] = url
    admin.close()
    return urls


async def test_a_student_reaches_only_their_own_keys_and_channels(
    classroom: dict[str, str], fresh_server: RedisServer
) -> None:
    alice = aioredis.from_url(classroom["alice"])
    await alice.set("lab10:alice:nb01:x", "1")
    await alice.publish("lab10:alice:nb03:__invalidate__", "x")
    assert (await alice.info("server"))["redis_version"]
    for command in [
        ("GET", "lab10:bob:nb01:x"),
        ("SET", "lab10:x", "1"),
        ("PUBLISH", "lab10:bob:nb03:__invalidate__", "x"),
        ("KEYS", "lab10:alice:*"),
        ("FLUSHDB",),
        ("CONFIG", "GET", "maxmemory"),
        ("SWAPDB", "0", "1"),
        ("CLIENT", "KILL", "TYPE", "pubsub"),
        ("ACL", "SETUSER", "mallory", "on"),
    ]:
        with pytest.raises(NoPermissionError):
            await alice.execute_command(*command)
    await alice.aclose()


@pytest.fixture
async def students(classroom: dict[str, str]) -> AsyncIterator[dict[str, MultiLevelCache]]:
    """Two instances of Alice's cache and one of Bob's, for the same notebook, with backplane
    and tracking: as two students running notebook 03 at once."""
    caches = {}
    for name, url in [*classroom.items(), ("alice-peer", classroom["alice"])]:
        client = aioredis.from_url(url)
        namespace = f"lab10:{name.removesuffix('-peer')}:nb03:"
        caches[name] = await MultiLevelCache(client, namespace=namespace, tracking=True).start()
    yield caches
    for cache in caches.values():
        await cache.invalidate_pattern("*")
        await cache.close()
        await cache.redis.aclose()


async def test_two_students_never_see_each_others_invalidations(
    students: dict[str, MultiLevelCache], fresh_server: RedisServer
) -> None:
    alice, peer, bob = students["alice"], students["alice-peer"], students["bob"]
    for cache in students.values():
        await cache.get("policy:1", lambda name=cache.namespace: _value(name))
        await cache.get("policy:1", lambda: _value("unused"))  # past our own write's notice
    assert peer.backplane is not None and bob.backplane is not None
    peer_seen, bob_seen = peer.backplane.received, bob.backplane.received
    await alice.set("policy:1", "alice's new value")
    await peer.backplane.wait_received(peer_seen + 1)  # alice's peer heard it ...
    assert peer.key("policy:1") not in peer.l1
    assert bob.key("policy:1") in bob.l1  # ... bob, on the same notebook, did not
    assert bob.backplane.received == bob_seen
    assert await bob.get("policy:1", lambda: _value("reloaded")) == "lab10:bob:nb03:"
    admin = redis.Redis(host="127.0.0.1", port=fresh_server.port)
    assert admin.acl_log() == []  # backplane, tracking and clean-up were all allowed
    admin.close()


async def _value(value: str) -> str:
    return value


def test_acl_rules_are_the_documented_line() -> None:
    rules = acl_rules("alice", "pw")
    assert rules[3:] == [
        "~lab10:alice:*",
        "&lab10:alice:*",
        "&__redis__:invalidate",
        "+@all",
        "-@dangerous",
        "+info",
    ]


# -- exercises ---------------------------------------------------------------------------------


@pytest.fixture
def solutions(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("labcache.lab.solutions.nbtest")

    async def greet(name: str) -> str:
        return f"hello {name}"

    module.greet = greet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


async def _stub(name: str) -> str:
    raise NotImplementedError  # your code here


async def test_a_stub_stays_a_stub_and_its_check_says_not_attempted(
    solutions: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv(exercises.SOLUTIONS_VAR, raising=False)

    @exercise("nbtest")
    async def greet(name: str) -> str:
        raise NotImplementedError  # your code here

    @self_check
    async def check() -> str:
        return "PASS" if await greet("x") == "hello x" else "FAIL: wrong greeting"

    assert (await check()).startswith("NOT ATTEMPTED: greet() still raises NotImplementedError")


async def test_solutions_replace_stubs_when_enabled(
    solutions: types.ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(exercises.SOLUTIONS_VAR, "1")

    @exercise("nbtest")
    async def greet(name: str) -> str:
        raise NotImplementedError

    assert greet is solutions.greet
    assert "greet() is the course's solution" in capsys.readouterr().out
    with pytest.raises(LookupError, match="nbtest has no missing"):
        solution("nbtest", "missing")


async def test_a_failing_answer_is_a_fail_line_not_a_traceback() -> None:
    @self_check
    async def check() -> str:
        raise KeyError("policy:1")

    assert await check() == "FAIL: KeyError: 'policy:1'"
