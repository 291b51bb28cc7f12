"""Nothing labcache starts outlives its owner, also when the owner is killed (issue 18, part 5).

nbval SIGKILLs each notebook's kernel; Jupyter SIGTERMs a kernel whose shutdown takes over
2.5 s (ipykernel waits for its children, and redis-servers it has signalled stay zombies). In
both cases no atexit handler runs, so the folders of `LocalCluster` (in the temp directory)
and of an embedded `RedisServer` used to stay behind. A `FolderGuard` removes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from jupyter_client import KernelManager

from labcache.embedded import RedisBinaryNotFound, RedisServer, find_redis_server
from labcache.lab.local_cluster import LocalCluster

try:
    find_redis_server()
except RedisBinaryNotFound as exc:
    pytest.skip(f"no redis-server binary ({exc})", allow_module_level=True)

TIMEOUT = 30.0

# Prints the folders and the server pids, then waits to be killed.
OWNER = """
import sys, time
from labcache.lab.local_cluster import LocalCluster
from labcache.embedded import RedisServer
cluster = LocalCluster(primaries=3, replicas=0).start()
server = RedisServer().start()
pids = [s.process.pid for s in [*cluster.servers.values(), server]]
print(cluster.directory, server.directory, *pids, flush=True)
time.sleep(600)
"""

# Guards a folder, then exits at once without dismissing the guard.
GUARD_OWNER = """
import sys
from pathlib import Path
from labcache.embedded import FolderGuard
guard = FolderGuard(Path(sys.argv[1]))
assert guard.active
"""


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: it only waits for a parent that is gone to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _wait_until_gone(folders: list[Path], pids: list[int]) -> tuple[list[Path], list[int]]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        left = [f for f in folders if f.exists()], [p for p in pids if _alive(p)]
        if left == ([], []):
            break
        time.sleep(0.05)
    return left


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path), "LABCACHE_HOME": str(tmp_path / "home")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds servers through /proc")
def test_a_killed_owner_leaves_no_folder_and_no_server(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=_env(tmp_path),
        start_new_session=True,  # SIGKILL to the owner alone: its servers are not signalled
    )  # fmt: skip
    assert owner.stdout is not None
    cluster_dir, server_dir, *pids = owner.stdout.readline().split()
    folders = [Path(cluster_dir), Path(server_dir)]
    assert all(f.is_relative_to(tmp_path) and f.is_dir() for f in folders)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert _wait_until_gone(folders, [int(p) for p in pids]) == ([], [])


@pytest.mark.slow
@pytest.mark.notebook
def test_a_kernel_shut_down_by_jupyter_leaves_nothing(tmp_path: Path) -> None:
    """What JupyterLab does on "shut down kernel": a shutdown request, SIGTERM after 2.5 s."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=_env(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        code = (
            "from labcache.lab.local_cluster import LocalCluster\n"
            "cluster = LocalCluster(primaries=3, replicas=0).start()\n"
        )
        reply = kc.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert [p.name[:17] for p in tmp_path.iterdir()] == ["labcache-cluster-"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert _wait_until_gone(list(tmp_path.glob("labcache-cluster-*")), []) == ([], [])


def test_stop_removes_the_folder_and_dismisses_the_guard(tmp_path: Path) -> None:
    with RedisServer(directory=None) as server:
        guard = server.guard
        assert guard is not None and guard.active
        folder = server.directory
    assert guard is not None and not guard.active
    assert folder is not None and not folder.exists()


def test_a_folder_given_to_the_server_is_neither_guarded_nor_removed(tmp_path: Path) -> None:
    with RedisServer(directory=tmp_path / "mine") as server:
        assert server.guard is None
    assert (tmp_path / "mine").is_dir()


def test_a_guard_removes_its_folder_once_its_owner_has_gone(tmp_path: Path) -> None:
    folder = tmp_path / "guarded"
    (folder / "inside").mkdir(parents=True)
    owner = subprocess.run(
        [sys.executable, "-c", GUARD_OWNER, str(folder)], env=_env(tmp_path), timeout=TIMEOUT
    )
    assert owner.returncode == 0
    assert _wait_until_gone([folder], []) == ([], [])


def test_local_cluster_stop_dismisses_its_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with LocalCluster(primaries=3, replicas=0) as cluster:
        guard = cluster.guard
        assert guard is not None and guard.active
    assert not guard.active
    assert list(tmp_path.iterdir()) == []


def test_a_folder_too_deep_for_a_unix_socket_gets_loopback_tcp(tmp_path: Path) -> None:
    """A long TMPDIR or project path: redis-server refuses a socket path over 107 bytes."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with RedisServer(directory=deep) as server:
        assert server.port and server.url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(server.url, socket_timeout=TIMEOUT) as client:
            assert client.ping() is True
        assert not server.socket_path.exists()
