"""The notebooks' exercises: stubs a student fills in, the course's answers kept apart.

An exercise cell holds a stub marked `@exercise("nb02")` whose body raises NotImplementedError;
its check (a `@self_check` function) says "NOT ATTEMPTED" until the student writes it, so Run
All completes and no stored check says PASS. With `LABCACHE_SOLUTIONS=1` (environment or
`.env`), `@exercise` returns the function of the same name in `labcache.lab.solutions.<part>`
instead, and every check says PASS: that is how the course's own answers are tested.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dotenv import dotenv_values, find_dotenv

SOLUTIONS_VAR = "LABCACHE_SOLUTIONS"
F = TypeVar("F", bound=Callable[..., Any])


def solutions_enabled() -> bool:
    """`LABCACHE_SOLUTIONS=1` in the environment (or else in `.env`)."""
    value = os.environ.get(SOLUTIONS_VAR)
    if value is None:
        dotenv = find_dotenv(usecwd=True)
        value = (dotenv_values(dotenv).get(SOLUTIONS_VAR) if dotenv else None) or ""
    return value.strip() == "1"


def solution(part: str, name: str) -> Callable[..., Any]:
    """The course's answer to exercise `name` of notebook `part` (e.g. "nb02", "change_email")."""
    module = importlib.import_module(f"labcache.lab.solutions.{part}")
    try:
        found: Callable[..., Any] = getattr(module, name)
    except AttributeError:
        raise LookupError(f"labcache.lab.solutions.{part} has no {name}()") from None
    return found


def exercise(part: str) -> Callable[[F], F]:
    """Mark a stub: kept as written, or replaced by the solution when LABCACHE_SOLUTIONS=1."""

    def mark(stub: F) -> F:
        if not solutions_enabled():
            return stub
        answer = solution(part, stub.__name__)
        print(f"{SOLUTIONS_VAR}=1: {stub.__name__}() is the course's solution")
        return answer  # type: ignore[return-value]

    return mark


def _innermost(error: BaseException) -> str:
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name if tb is not None else "the exercise"


def self_check(check: Callable[[], Awaitable[str]]) -> Callable[[], Awaitable[str]]:
    """A check cell's function: its PASS/FAIL line, or NOT ATTEMPTED while a stub is a stub.

    A stub's NotImplementedError becomes "NOT ATTEMPTED: <stub>() ..."; any other exception
    from the student's code becomes a FAIL line naming it, so the notebook still runs on.
    """

    @functools.wraps(check)
    async def run() -> str:
        try:
            return await check()
        except NotImplementedError as e:
            return (
                f"NOT ATTEMPTED: {_innermost(e)}() still raises NotImplementedError. Write its "
                "body in the exercise cell, run that cell, then run this check again."
            )
        except Exception as e:  # the student's code failed: say how, and let the notebook go on
            return f"FAIL: {type(e).__name__}: {e}"

    return run
