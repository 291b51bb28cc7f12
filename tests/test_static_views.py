"""Every stored notebook, exported to HTML as nbviewer does it, shows every figure in Chromium.

`jupyter nbconvert --to html` (nbconvert's HTMLExporter, its default template) turns each stored
notebook into one HTML file; headless Chromium opens it with every request outside the file
refused (an export is read offline too), and every figure the notebook stores (a plotly output or
a live widget's view) must show as a picture that loaded, at least 200 x 150 px. The sizes and
counts go to artifacts/static/summary.json. LABCACHE_BROWSER_NOTEBOOKS: another folder of notebooks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM
from tests.static_figures import shows_a_figure

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = Path(os.environ.get("LABCACHE_BROWSER_NOTEBOOKS") or ROOT / "notebooks")
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
ARTIFACTS = ROOT / "artifacts" / "static"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
nbconvert = pytest.importorskip("nbconvert", reason="nbconvert comes with jupyterlab")
pytestmark = NEEDS_CHROMIUM

# Every <img> in an output area: loaded (a decoded picture) and its size on the page.
PICTURES = """() => [...document.querySelectorAll('.jp-OutputArea-output img')].map(img => ({
    loaded: img.complete && img.naturalWidth > 0,
    width: img.getBoundingClientRect().width,
    height: img.getBoundingClientRect().height,
}))"""


def stored_figures(nb: Any) -> int:
    return sum(shows_a_figure(output) for cell in nb.cells for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def browser() -> Any:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def summary() -> Any:
    found: dict[str, Any] = {}
    yield found
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "summary.json").write_text(json.dumps(found, indent=2) + "\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_html_export_shows_every_figure(
    path: Path, browser: Any, summary: dict[str, Any], tmp_path: Path
) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    page_file = tmp_path / f"{path.stem}.html"
    page_file.write_text(html)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.route(
            "**/*",
            lambda route: (
                route.continue_() if route.request.url.startswith("file:") else route.abort()
            ),
        )
        page.goto(page_file.as_uri(), wait_until="load")
        pictures = page.evaluate(PICTURES)
    finally:
        page.close()
    expected = stored_figures(nb)
    shown = [p for p in pictures if p["loaded"] and p["width"] >= 200 and p["height"] >= 150]
    summary[path.name] = {"figures": expected, "pictures_shown": len(shown),
                          "html_bytes": len(html.encode())}  # fmt: skip
    assert expected > 0, "a notebook of this course shows at least one figure"
    assert len(shown) >= expected, f"{expected} figures stored, {len(shown)} shown: {pictures}"
