"""A PNG beside every figure a stored notebook shows, for viewers that cannot run it.

GitHub, nbviewer and `jupyter nbconvert --to html` show neither plotly's own output type nor a
live widget: only PNG/SVG. So when `make notebooks` stores a run, each output that holds a
plotly figure (`application/vnd.plotly.v1+json`) or a live widget with a figure inside also gets
an `image/png` of it, in the same output: JupyterLab keeps showing the interactive version, the
others show the picture. A live widget's figure is taken from the kernel after every cell
(`labcache.lab.display.widget_snapshots`), so its PNG shows the figure as it stood at the end of
the run; a widget without a figure (a progress bar) keeps its last text instead. Pictures come
from kaleido, which drives the machine's Chromium (Debian's `chromium`); plotly.js comes from
the plotly package and MathJax is off, so nothing is downloaded; Pillow then stores each
picture in 128 colours.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import nbformat

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
PNG = "image/png"
PROGRESS = re.compile(r"\d+%\|.*\|")
WIDTH, HEIGHT = 900, 450  # when the figure does not set its own size; about a cell's width


def _outputs(nb: nbformat.NotebookNode) -> Iterator[dict[str, Any]]:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "data" in output:
                yield output


def widget_ids(cells: list[nbformat.NotebookNode]) -> list[str]:
    """The model ids of the widget views these cells show."""
    return [
        output["data"][WIDGET]["model_id"]
        for cell in cells
        for output in cell.get("outputs", [])
        if WIDGET in output.get("data", {})
    ]


async def snapshot_widgets(client: Any, cells: list[nbformat.NotebookNode]) -> dict[str, Any]:
    """Ask the kernel `client` runs for the figures in the widgets `cells` show, by model id."""
    ids = widget_ids(cells)
    if not ids:
        return {}
    expression = f"__import__('labcache.lab.display').lab.display.widget_snapshots({ids!r})"
    msg_id = client.kc.execute(
        "", silent=True, store_history=False, user_expressions={"figures": expression}
    )
    reply = await client.async_wait_for_reply(msg_id)
    result = reply["content"]["user_expressions"]["figures"]
    if result["status"] != "ok":
        raise RuntimeError(
            f"widget_snapshots failed: {result.get('ename')}: {result.get('evalue')}"
        )
    found: dict[str, Any] = json.loads(ast.literal_eval(result["data"]["text/plain"]))
    return found


def is_progress_bar(output: dict[str, Any]) -> bool:
    """A widget view that is a tqdm bar ("warming: 100%|...| 1000/1000"), not a figure."""
    text = "".join(output.get("data", {}).get("text/plain", ""))
    return WIDGET in output.get("data", {}) and bool(PROGRESS.search(text))


def shows_a_figure(output: dict[str, Any]) -> bool:
    """A plotly figure, or a live widget that is not a progress bar (it holds a figure)."""
    data = output.get("data", {})
    return PLOTLY in data or (WIDGET in data and not is_progress_bar(output))


def add_pngs(nb: nbformat.NotebookNode, widgets: dict[str, Any]) -> int:
    """Store a PNG in every output of `nb` that shows a figure; return how many.

    A widget without a figure (a progress bar) gets its last text instead of the 0 % it was
    shown at.
    """
    todo = []
    for output in _outputs(nb):
        data = output["data"]
        snapshot = widgets.get(data[WIDGET]["model_id"], {}) if WIDGET in data else {}
        if PLOTLY in data:
            todo.append((output, data[PLOTLY]))
        elif "figure" in snapshot:
            todo.append((output, snapshot["figure"]))
        elif "text" in snapshot:
            data["text/plain"] = snapshot["text"]
    if todo:
        pngs = asyncio.run(_render([figure for _, figure in todo]))
        for (output, _), png in zip(todo, pngs, strict=True):
            output["data"][PNG] = base64.b64encode(png).decode("ascii")
    return len(todo)


async def _render(figs: list[Any]) -> list[bytes]:
    import kaleido  # the dev extra: only storing notebooks needs it

    pngs = []
    async with kaleido.Kaleido(n=1, mathjax=False) as renderer:
        for fig in figs:
            layout = fig.get("layout", {})
            size = {"width": layout.get("width") or WIDTH, "height": layout.get("height") or HEIGHT}
            png = await renderer.calc_fig(fig, opts={"format": "png", **size})
            pngs.append(_small(png))
    return pngs


def _small(png: bytes) -> bytes:
    """The same picture in 128 colours: a plot has few, and this makes it 4-5 times smaller."""
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    quantized = picture.quantize(
        colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    quantized.save(out, "PNG", optimize=True)
    return out.getvalue()
