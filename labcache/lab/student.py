"""One Redis for a whole class: every student's keys and channels under `lab10:<student>:`.

A notebook's namespace is `namespace("nb02")` = `lab10:<student>:nb02:`; its caches derive their
backplane channel, tracking prefix and lock keys from it, so two students running the same
notebook at the same time never see each other's keys, events or invalidations, and a clean-up
removes only the student's own keys.

`<student>` is `LABCACHE_STUDENT` (environment, then `.env`); without it, a name generated once
(the login name and six random hex digits) and kept in `.labcache-student` in the project folder,
so it is stable across runs and differs between two students' checkouts.

An instructor fences each student in with an ACL user (`acl_setuser`): the student's prefix for
keys and channels, server-assisted tracking's channel, and every command but the dangerous ones
(KEYS, FLUSHDB, CONFIG, DEBUG, CLIENT KILL, ...), INFO excepted. `python -m labcache.lab.student
acl alice bob` prints the lines for a class, with a fresh password and `.env` line for each.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
from dotenv import dotenv_values, find_dotenv

from labcache.connection import Settings
from labcache.errors import LabcacheError

STUDENT_VAR = "LABCACHE_STUDENT"
STUDENT_FILE = ".labcache-student"
# Letters, digits, `-`, `_` and `.`: nothing a glob (SCAN MATCH, ACL ~pattern) or a key's `:`
# structure would read as syntax.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


class BadStudentName(LabcacheError, ValueError):
    """A student name that cannot be a key prefix: the message says what is allowed."""


@dataclass(frozen=True)
class Student:
    """A student's name, where it came from, and the prefix of everything they write."""

    name: str
    source: str  # "LABCACHE_STUDENT" or the file that keeps the generated name
    prefix: str  # e.g. "lab10:alice:"

    def namespace(self, part: str) -> str:
        """The namespace of one notebook (or any part): `lab10:alice:` + part + `:`."""
        return f"{self.prefix}{check_name(part, 'part')}:"


def check_name(name: str, what: str = STUDENT_VAR) -> str:
    """`name` if it can be a key prefix, else a `BadStudentName` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadStudentName(
            f"{what}={name!r}: use 1-40 letters, digits, '-', '_' or '.', starting with a letter "
            "or digit (no ':', spaces or glob characters * ? [ ] \\)"
        )
    return name


def project_folder() -> Path:
    """The checkout labcache runs from (beside its pyproject.toml), else the current folder."""
    repo = Path(__file__).resolve().parents[2]
    return repo if (repo / "pyproject.toml").exists() else Path.cwd()


def _generated(folder: Path) -> tuple[str, Path]:
    path = folder / STUDENT_FILE
    if path.exists():
        return check_name(path.read_text().strip(), str(path)), path
    login = re.sub(r"[^a-z0-9]+", "-", getpass.getuser().lower()).strip("-")[:24] or "student"
    name = f"{login}-{secrets.token_hex(3)}"
    try:  # exclusive create: of two kernels starting at once, one name wins
        with path.open("x") as f:
            f.write(name + "\n")
    except FileExistsError:
        return check_name(path.read_text().strip(), str(path)), path
    return name, path


def student(
    env: Mapping[str, str] | None = None,
    *,
    folder: Path | None = None,
    settings: Settings | None = None,
) -> Student:
    """This student: `LABCACHE_STUDENT` (environment, then `.env`), else the kept generated name."""
    if env is None:
        dotenv = find_dotenv(usecwd=True)
        env = (
            {**{k: v or "" for k, v in dotenv_values(dotenv).items()}, **os.environ}
            if dotenv
            else os.environ
        )
    settings = settings or Settings.from_env()
    name = env.get(STUDENT_VAR, "")
    if name:
        return Student(check_name(name), STUDENT_VAR, f"{settings.namespace}{name}:")
    name, path = _generated(folder or project_folder())
    return Student(name, str(path), f"{settings.namespace}{name}:")


def namespace(part: str) -> str:
    """This student's namespace for one notebook: `namespace("nb02")` = `lab10:<student>:nb02:`."""
    return student().namespace(part)


def acl_rules(name: str, password: str, *, base: str = "lab10:") -> list[str]:
    """The `ACL SETUSER <name>` rules that limit a student to their own prefix."""
    prefix = f"{base}{check_name(name)}:"
    return [
        "reset",
        "on",
        f">{password}",
        f"~{prefix}*",  # keys
        f"&{prefix}*",  # pub/sub channels: backplanes, write-behind wake-ups
        "&__redis__:invalidate",  # server-assisted tracking (RESP2 redirect)
        "+@all",
        "-@dangerous",  # KEYS, FLUSHDB, FLUSHALL, CONFIG, DEBUG, CLIENT KILL, ACL SETUSER, ...
        "+info",  # health checks and the monitoring notebook (INFO is in @dangerous)
    ]


def acl_setuser(name: str, password: str, *, base: str = "lab10:") -> str:
    """One `redis-cli` line: `ACL SETUSER <name> reset on >... ~lab10:<name>:* ...`."""
    return " ".join(["ACL", "SETUSER", check_name(name), *acl_rules(name, password, base=base)])


def student_url(admin_url: str, name: str, password: str, *, base: str = "lab10:") -> str:
    """Create (or reset) student `name` on the server at `admin_url`; the student's own URL."""
    with redis.Redis.from_url(admin_url) as admin:
        admin.execute_command("ACL", "SETUSER", name, *acl_rules(name, password, base=base))
    parts = urlsplit(admin_url)
    auth = urlencode({"username": name, "password": password})
    return urlunsplit(parts._replace(query=f"{parts.query}&{auth}" if parts.query else auth))


def child_url(client: redis.asyncio.Redis) -> str:
    """The URL of the server `client` uses, as the same user: for a child process to connect.

    Hand it to the child in its environment (`REDIS_URL`) or on its stdin, never on its command
    line: it holds the password, and a command line is visible to every user of the machine.
    """
    pool = client.connection_pool
    kw = pool.connection_kwargs
    user, password = kw.get("username") or "", kw.get("password") or ""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user or password else ""
    db = kw.get("db") or 0
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={db}"
    if not issubclass(pool.connection_class, redis.asyncio.SSLConnection):
        return f"redis://{auth}{kw['host']}:{kw['port']}/{db}"
    tls = {k: kw[k] for k in ("ssl_cert_reqs", "ssl_ca_certs") if isinstance(kw.get(k), str)}
    query = f"?{urlencode(tls)}" if tls else ""
    return f"rediss://{auth}{kw['host']}:{kw['port']}/{db}{query}"


def class_setup(names: Sequence[str], host: str = "HOST", port: int = 6379) -> str:
    """For each student: the ACL SETUSER line (fresh password) and the `.env` lines to hand out."""
    lines = []
    for name in names:
        password = secrets.token_urlsafe(18)
        lines += [
            f"# {name}",
            acl_setuser(name, password),
            f"#   .env: REDIS_URL=redis://{name}:{password}@{host}:{port}/0",
            f"#         {STUDENT_VAR}={name}",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labcache.lab.student", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("whoami", help="this checkout's student name and prefix")
    acl = sub.add_parser("acl", help="ACL SETUSER lines and .env lines for a class")
    acl.add_argument("names", nargs="+")
    acl.add_argument("--host", default="HOST", help="the class server's host, for the .env lines")
    acl.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    try:
        if args.command == "whoami":
            me = student()
            print(f"{me.name} (from {me.source}): keys and channels under {me.prefix}")
        else:
            print(class_setup(args.names, args.host, args.port))
    except BadStudentName as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
