"""Issue 10: least privilege, secrets, the embedded server's exposure, and TLS, on real servers.

- The library's tests pass when run as an ACL user that may touch only the test namespaces'
  keys and channels and only the commands labcache sends (no FLUSHDB, FLUSHALL, KEYS, CONFIG).
- A password given in a URL or in `.env` never shows in logs, printed banners, reprs,
  exceptions, or any output stored in the notebooks.
- The embedded redis-server listens on a unix socket only, in a folder only its owner can open.
- `rediss://` works through redis-py with a private CA (skipped if the binary has no TLS).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from labcache.connection import RedisUnavailable, Settings, connect
from labcache.embedded import RedisServer, free_port
from labcache.multilevel import MultiLevelCache
from tests.notebook_runner import NBVAL_PASSWORD as STUDENT_PASSWORD

ROOT = Path(__file__).resolve().parent.parent

# The library tests the restricted user runs (the others need no Redis, start their own, or
# drive notebooks and browsers).
RESTRICTED_SUITE = [
    "tests/test_aside.py",
    "tests/test_contract.py",
    "tests/test_multilevel.py",
    "tests/test_tracking.py",
    "tests/test_invalidation.py",
    "tests/test_stampede.py",
    "tests/test_writes.py",
]

# Tests that need more than labcache does (they administer the server or write elsewhere on
# purpose); a rename makes the restricted run fail loudly rather than pass quietly.
NEEDS_ADMIN = [
    "tests/test_tracking.py::test_external_write_evicts_tracked_l1_entry[flushdb]",  # FLUSHDB
    "tests/test_tracking.py::test_other_namespaces_do_not_evict",  # writes outside t*
    # CLIENT KILL:
    "tests/test_tracking.py::test_killed_tracking_connection_flushes_l1_and_recovers",
]

# Multi-process tests, slow on a busy machine; the same commands run in the single-process
# tests of the same modules.
SLOW_ELSEWHERE = [
    "tests/test_stampede.py::test_lock_allows_at_most_one_load_across_processes",
    "tests/test_writes.py::test_flusher_process_killed_mid_batch_loses_no_write",
]

# Every command labcache sends, and the few the tests add (INFO commandstats to count commands;
# RPUSH/BLPOP in the lock tests). Nothing @admin or @dangerous but INFO (needed by health_check).
LABCACHE_COMMANDS = [
    "+ping", "+hello", "+client|id", "+client|tracking",  # connect, server-assisted tracking
    "+get", "+set", "+unlink", "+del", "+exists", "+scan",  # cache-aside, multi-level, patterns
    "+pttl", "+ttl", "+pexpire", "+expire", "+incr", "+incrby", "+time",  # TTLs, generations
    "+sadd", "+smembers", "+sismember",  # tags
    "+evalsha", "+script|load", "+multi", "+exec",  # Lua (tags, locks, sliding), transactions
    "+publish", "+subscribe", "+unsubscribe", "+pubsub|numsub",  # backplane, lock wake-ups
    "+xadd", "+xreadgroup", "+xack", "+xautoclaim", "+xgroup|create",  # write-behind stream
    "+xgroup|delconsumer", "+xpending", "+xrange", "+xlen", "+xdel",
    "+info", "+dbsize",  # health_check
    "+rpush", "+blpop",  # tests only
]  # fmt: skip


def labcache_acl(password: str, prefix: str = "t") -> list[str]:
    """ACL SETUSER rules for a labcache user whose namespaces all start with `prefix`."""
    return [
        "reset",
        "on",
        f">{password}",
        f"~{prefix}*",
        f"&{prefix}*",
        "&__redis__:invalidate",  # server-assisted tracking's channel
        *LABCACHE_COMMANDS,
    ]


ACL_PASSWORD = "acl-Lab10-restricted-pw"
SECRET = "Sup3r-Secret-test-Pa55"
# Every password a test in this repository uses: none may ever be in a notebook.
KNOWN_PASSWORDS = [ACL_PASSWORD, SECRET, "s3cret-Pa55", "p@ss/w:rd#1?", STUDENT_PASSWORD]


# -- least privilege -----------------------------------------------------------------------------


@pytest.mark.slow
def test_library_suite_as_restricted_user(fresh_server: RedisServer) -> None:
    admin = redis.Redis.from_url(fresh_server.url)
    admin.execute_command("ACL", "SETUSER", "labcache", *labcache_acl(ACL_PASSWORD))
    url = f"redis://labcache:{ACL_PASSWORD}@127.0.0.1:{fresh_server.port}/0"
    user = redis.Redis.from_url(url)
    denied = [
        ("FLUSHDB",),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "port"),
        ("CLIENT", "KILL", "TYPE", "pubsub"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
        ("GET", "lab10:someone-elses-key"),
        ("PUBLISH", "another-channel", "x"),
    ]
    for command in denied:
        with pytest.raises(NoPermissionError):
            user.execute_command(*command)
    admin.execute_command("ACL", "LOG", "RESET")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LABCACHE_"))}
    env["LABCACHE_TEST_REDIS_URL"] = url
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra"),
            *(f"--deselect={test}" for test in NEEDS_ADMIN + SLOW_ELSEWHERE),
            *RESTRICTED_SUITE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    print(f"\n[restricted ACL run] {summary}\n" + "\n".join(skipped))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary
    # Nothing labcache (or a test) tried was refused, even where a refusal would be swallowed.
    refused = admin.execute_command("ACL", "LOG")
    assert refused == [], refused
    assert ACL_PASSWORD not in run.stdout + run.stderr
    user.close()
    admin.close()


# -- secrets -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    with RedisServer(port=free_port(), extra_args=("--requirepass", SECRET)) as server:
        yield server


def _everything_about(exc: BaseException) -> str:
    """Message, repr, and the formatted chain, including suppressed context."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), "".join(traceback.format_exception(seen))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


async def test_failed_connects_never_show_the_password(
    password_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's included
    port = password_server.port
    wrong = f"wrong-{SECRET}"
    urls = [
        f"redis://:{wrong}@127.0.0.1:{port}/0",  # refused by the server
        f"redis://default:{wrong}@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?password={wrong}",
        f"redis://:{wrong}@127.0.0.1:{free_port()}/0",  # nothing listens
        f"rediss://:{wrong}@127.0.0.1:{port}/0",  # TLS to a plain port
        f"redis://:{wrong}/x@127.0.0.1:{port}/0",  # malformed (an unencoded /)
    ]
    texts = []
    for url in urls:
        with pytest.raises((RedisUnavailable, ValueError)) as info:
            await connect(url, socket_connect_timeout=1.0)
        texts.append(_everything_about(info.value))
    out = capsys.readouterr()
    for text in [*texts, caplog.text, out.out, out.err]:
        assert SECRET not in text
    assert any("AuthenticationError" in t or "password" in t.lower() for t in texts)


async def test_a_working_connection_shows_no_password_anywhere(
    password_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    namespace: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await connect(f"redis://default:{SECRET}@127.0.0.1:{password_server.port}/0")
    async with MultiLevelCache(client, namespace=namespace) as cache:
        await cache.get("k", _loader)
        shown = [repr(client), str(client), repr(client.connection_pool), repr(cache)]
    await client.aclose()
    out = capsys.readouterr()
    assert "default:***@127.0.0.1" in out.out  # the banner, redacted
    for text in [*shown, caplog.text, out.out, out.err]:
        assert SECRET not in text


async def _loader() -> str:
    return "v"


async def test_password_from_dotenv_is_never_shown(
    password_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # load_dotenv writes into os.environ: give it a copy without the suite's REDIS_URL.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    monkeypatch.setattr(os, "environ", clean)
    env_file = tmp_path / ".env"
    lines = ["REDIS_HOST=127.0.0.1", f"REDIS_PORT={password_server.port}"]
    env_file.write_text("\n".join([*lines, f"REDIS_PASSWORD={SECRET}"]) + "\n")
    client = await connect(settings=Settings.from_env(str(env_file)))
    assert await client.ping()
    await client.aclose()

    os.environ.pop("REDIS_PASSWORD")
    env_file.write_text("\n".join([*lines, f"REDIS_PASSWORD=wrong-{SECRET}"]) + "\n")
    with pytest.raises(RedisUnavailable) as info:
        await connect(settings=Settings.from_env(str(env_file)))
    out = capsys.readouterr()
    assert ":***@127.0.0.1" in out.out
    for text in [_everything_about(info.value), caplog.text, out.out, out.err]:
        assert SECRET not in text


_PASSWORD_IN_TEXT = re.compile(
    r"password=(?!\*\*\*|<)[^\s&'\",)]+"  # a password= argument or query with a real value
    r"|rediss?://[^\s/@:'\"]*:(?!\*\*\*)[^\s/@'\"]+@",  # a URL's user:password@
    re.IGNORECASE,
)


def _outputs(notebook: Path) -> Iterator[tuple[int, str]]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            texts = [output.get("text", ""), *output.get("traceback", [])]
            texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                yield index, "".join(text) if isinstance(text, list) else str(text)


def test_no_stored_notebook_output_holds_a_password() -> None:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    leaks = []
    for notebook in notebooks:
        whole = notebook.read_text(encoding="utf-8")
        leaks += [f"{notebook.name}: {p!r}" for p in KNOWN_PASSWORDS if p in whole]
        for index, text in _outputs(notebook):
            leaks += [f"{notebook.name} cell {index}: {m}" for m in _PASSWORD_IN_TEXT.findall(text)]
    assert leaks == []


def test_the_notebook_scan_would_catch_a_leak() -> None:
    """The pattern above is not vacuous."""
    for leak in [
        "redis://:hunter2@localhost:6379/0",
        "rediss://app:hunter2@cache.example.com:6380",
        "Redis<ConnectionPool<Connection<host=x,password=hunter2>>>",
        "unix:///tmp/r.sock?db=0&password=hunter2",
    ]:
        assert _PASSWORD_IN_TEXT.search(leak), leak
    for fine in [
        "redis://:***@localhost:6379/0",
        "unix:///tmp/r.sock?db=0&password=***",
        "password=<REDACTED>",
        "redis://localhost:6379/0",
    ]:
        assert not _PASSWORD_IN_TEXT.search(fine), fine


# -- the embedded server -------------------------------------------------------------------------


async def test_embedded_server_listens_only_on_a_private_unix_socket() -> None:
    with RedisServer() as server:  # what connect() starts when no Redis is configured
        assert server.directory is not None
        assert stat.S_IMODE(server.directory.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(server.socket_path.stat().st_mode)
        assert stat.S_IMODE(server.socket_path.stat().st_mode) & 0o077 == 0
        client = aioredis.from_url(server.url)
        assert await client.config_get("port") == {"port": "0"}  # no TCP listener at all
        assert await client.config_get("save") == {"save": ""}  # nothing written to disk
        assert await client.config_get("appendonly") == {"appendonly": "no"}
        await client.aclose()


# -- TLS -----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


# Python 3.13+ verifies strictly (VERIFY_X509_STRICT) and refuses a bare `openssl req -x509`
# CA ("CA cert does not include key usage extension"). A proper CA has basicConstraints CA:TRUE
# and keyUsage keyCertSign; the server certificate names its host in subjectAltName and points
# back at the CA with an authority key identifier. The same steps as the README's TLS recipe
# (extension files for `openssl x509 -req`: no system openssl.cnf defaults, no duplicates).
_CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
subjectAltName = IP:127.0.0.1, DNS:localhost
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1/localhost (EC keys: fast)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "ca.ext").write_text(_CA_EXTENSIONS)
    (directory / "server.ext").write_text(_SERVER_EXTENSIONS)
    _openssl("req", "-new", *ec, "-keyout", "ca.key", "-out", "ca.csr",
             "-subj", "/CN=labcache test CA", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.crt",
             "-days", "1", "-extfile", "ca.ext", cwd=directory)  # fmt: skip
    _openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext",
             cwd=directory)  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on PATH to make a test certificate")
    ca, cert, key = _make_certs(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        extra_args=("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                    "--tls-auth-clients", "no"),
    )  # fmt: skip
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"{server.binary} was built without TLS support: {str(exc)[-200:]}")
        raise
    try:
        yield server, tls_port, ca
    finally:
        server.stop()


async def test_rediss_with_a_private_ca(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, port, ca = tls_server
    strict = ssl.create_default_context(cafile=str(ca))
    strict.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default, here on every Python
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=strict)
    writer.close()
    await writer.wait_closed()
    client = await connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", announce=False)
    assert await client.ping()
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    await client.aclose()
    with pytest.raises(RedisUnavailable, match="certificate verify failed"):
        await connect(f"rediss://127.0.0.1:{port}/0", announce=False)  # not our CA
    with pytest.raises(RedisUnavailable):
        await connect(f"redis://127.0.0.1:{port}/0", announce=False, socket_timeout=1.0)
