"""Each stored notebook fits its time box and reads anywhere.

- The core path (every cell before the first heading that starts with "Deep dive") and the
  closing "Clean-up and takeaways" section, which a student on the core path reads too, hold at
  most 100 words of markdown per minute of the time box the first cell states.
- Code cells a student reads are short: at most 25 lines on the core path, 35 anywhere.
- The takeaways close the notebook: its last cell is markdown, after the last code cell.
- Every output that shows a figure (plotly's own type, or a live widget other than a progress
  bar) also stores a PNG, so
  GitHub, nbviewer and HTML exports show it (tests/test_static_views.py opens those exports).
- No output shows a path of the machine that ran it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.static_figures import shows_a_figure

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WORDS_PER_MINUTE = 100
CORE_LINES, ANY_LINES = 25, 35
DEEP_DIVE = re.compile(r"^#+\s+Deep dive\b", re.MULTILINE)
CLOSING = re.compile(r"^##\s+Clean-up and takeaways", re.MULTILINE)
TIME_BOX = re.compile(r"time box:\s*(\d+)\s*minutes")
# A path under a home, temp or system folder, as a machine that ran the notebook would print it.
MACHINE_PATH = re.compile(r"(?<![\w.:/<])/(?:home|root|tmp|Users|var|private|work|opt|srv)/[\w.-]")


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def core_and_rest(nb: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and DEEP_DIVE.search(source(cell)):
            return cells[:i], cells[i:]
    return cells, []


def closing(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells from the "Clean-up and takeaways" heading to the end."""
    starts = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "markdown" and CLOSING.search(source(cell))
    ]
    assert starts, "no '## Clean-up and takeaways' section"
    return list(nb["cells"][starts[-1] :])


def reading_words(nb: dict[str, Any]) -> int:
    """Words of markdown a student on the core path reads: the core, then the closing section."""
    core, _ = core_and_rest(nb)
    cells = core + closing(nb)
    return sum(len(source(c).split()) for c in cells if c["cell_type"] == "markdown")


def time_box(nb: dict[str, Any]) -> int:
    found = TIME_BOX.search(source(nb["cells"][0]))
    assert found, "the first cell states no 'time box: N minutes'"
    return int(found.group(1))


def load(path: Path) -> dict[str, Any]:
    nb: dict[str, Any] = json.loads(path.read_text())
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_core_path_fits_the_time_box(path: Path) -> None:
    nb = load(path)
    _, rest = core_and_rest(nb)
    assert rest, "no 'Deep dive' section: the core path is the whole notebook"
    minutes = time_box(nb)
    words = reading_words(nb)
    assert words <= WORDS_PER_MINUTE * minutes, f"{words} words of markdown for {minutes} minutes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short(path: Path) -> None:
    core, rest = core_and_rest(load(path))
    too_long = [
        (source(cell).splitlines()[0], len(source(cell).splitlines()))
        for cells, limit in ((core, CORE_LINES), (rest, ANY_LINES))
        for cell in cells
        if cell["cell_type"] == "code" and len(source(cell).splitlines()) > limit
    ]
    assert not too_long, f"code cells over {CORE_LINES} (core) / {ANY_LINES} lines: {too_long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_takeaways_come_last(path: Path) -> None:
    cells = load(path)["cells"]
    last_code = max(i for i, cell in enumerate(cells) if cell["cell_type"] == "code")
    assert cells[-1]["cell_type"] == "markdown" and last_code < len(cells) - 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_stores_a_png(path: Path) -> None:
    missing = [
        (i, sorted(output["data"]))
        for i, cell in enumerate(load(path)["cells"])
        for output in cell.get("outputs", [])
        if shows_a_figure(output) and "image/png" not in output["data"]
    ]
    assert not missing, f"figure outputs without a PNG (cell, types): {missing}; make notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_output_shows_a_machine_path(path: Path) -> None:
    found = []
    for i, cell in enumerate(load(path)["cells"]):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")]
            texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                found += [(i, m.group(0)) for m in MACHINE_PATH.finditer(text)]
    assert not found, f"machine paths in outputs (cell, match): {found}"


@pytest.mark.parametrize(
    "text, machine",
    [
        ("loaded /home/ana/labcache/data/policies.csv", True),
        ("socket at /tmp/redis-1234.sock", True),
        ("(defined at /work/main/labcache/cache.py)", True),
        ("unix://<SOCKET>", False),
        ("policy:1/2 and https://redis.io/docs/latest/", False),
        ("read data/policies.csv", False),
    ],
)
def test_machine_path_pattern(text: str, machine: bool) -> None:
    assert bool(MACHINE_PATH.search(text)) is machine


@pytest.mark.parametrize(
    "text, figure",
    [
        ("top 1000: 100%|██████████| 1000/1000 [00:00<00:00, 5012.3key/s]", False),
        ("filling:   0%|          | 0/199000 [00:00<?, ?keys/s]", False),
        ("VBox(children=(IntSlider(value=64, description='value (KB)'), Figure…", True),
        ("Dashboard(children=(HBox(children=(Button(description='start'), …", True),
    ],
)
def test_progress_bars_are_told_from_live_figures(text: str, figure: bool) -> None:
    view = {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}
    output = {"data": {"application/vnd.jupyter.widget-view+json": view, "text/plain": text}}
    assert shows_a_figure(output) is figure


def headings(path: Path) -> list[str]:
    return [
        re.sub(r"^#+\s+(\d+\s+·\s+)?", "", line)
        for cell in load(path)["cells"]
        if cell["cell_type"] == "markdown"
        for line in source(cell).splitlines()
        if line.startswith("#")
    ]


def test_readme_places_every_mistake_in_sections_that_exist() -> None:
    """The README's table of the lab's 16 mistakes: each row's italic words are headings of the
    notebook named before them, and one of them names that mistake."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### The lab's 16 mistakes") :]
    table = table[: table.index("\n## ")]
    rows = dict(re.findall(r"^\| (\d+) \| .+? \| (.+) \|$", table, re.MULTILINE))
    assert sorted(map(int, rows)) == list(range(1, 17))
    by_number = {path.name[:2]: headings(path) for path in NOTEBOOKS}
    for number, where in rows.items():
        notebook, cited = None, []
        for ref, italic in re.findall(r"\b(0[1-9])\b|\*([^*]+)\*", where):
            if ref:
                notebook = ref
                continue
            assert notebook, f"mistake {number}: {italic!r} follows no notebook number"
            assert any(italic in h for h in by_number[notebook]), f"{notebook} has no {italic!r}"
            cited.append(italic)
        names = re.compile(rf"[Mm]istakes?\s+(?:\d+(?:,\s*|\s+and\s+))*{number}\b")
        assert any(names.search(h) for h in cited), f"no cited heading names mistake {number}"
