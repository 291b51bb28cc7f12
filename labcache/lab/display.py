"""Notebook helpers: one colour per level in every figure, library source, live widgets."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# The same colours in every notebook: a student learns them once.
COLORS = {
    "l1": "#2ca02c",  # memory hit: green
    "l2": "#1f77b4",  # Redis hit: blue
    "hit": "#1f77b4",
    "miss": "#d62728",  # source call: red
    "source": "#d62728",
    "stale": "#ff7f0e",  # stale served: orange
    "error": "#7f7f7f",
    "naive": "#9467bd",  # the lab's naive version: purple
}


def style(fig: Any, title: str, x: str, y: str, **layout: Any) -> Any:
    """Give a plotly figure its title and axis labels (with units), in the course's look."""
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
        height=layout.pop("height", 380),
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        **layout,
    )
    if hasattr(fig, "_view_count"):  # a live FigureWidget
        _fill_width(fig)
    return fig


def _fill_width(fig: Any) -> None:
    """Let a live figure take the cell's width, as a static one does, instead of 700 px.

    plotly's FigureWidget draws its view before the page attaches it, so plotly.js finds no
    container to measure and falls back to 700 px, and the widget never measures again. The
    front end counts the views it creates (`_view_count`): once one exists, turning autosize on
    makes plotly.js measure the cell it sits in (checked in JupyterLab 4.6: 700 px -> 968 px).
    """
    if getattr(fig, "_labcache_fill_width", False):
        return
    fig._labcache_fill_width = True
    fig.layout.autosize = False

    def widen(change: Any) -> None:
        if change["new"]:
            fig.unobserve(widen, names="_view_count")
            fig.layout.autosize = True

    fig.observe(widen, names="_view_count")


def show(obj: Any) -> Any:
    """Display the source of a labcache function or class, highlighted, in a notebook."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")  # type: ignore[no-untyped-call]


def widget_snapshots(model_ids: list[str]) -> str:
    """What each live widget shows now, as JSON by model id: its plotly figure, else its text.

    A live figure reaches the browser as a stream of update messages, not as saved widget
    state, so the kernel holds its only complete copy. `make notebooks` asks for it after every
    cell and stores a PNG of the last copy beside the widget, for viewers that cannot run it. A
    widget without a figure (a progress bar) gives its text (`repr`), which those viewers show.
    """
    import plotly.io as pio
    from ipywidgets.widgets.widget import _instances  # every open widget, by model id
    from plotly.basewidget import BaseFigureWidget

    found: dict[str, Any] = {}
    for model_id in model_ids:
        if model_id not in _instances:
            continue  # closed: the last snapshot stands
        todo = [_instances[model_id]]
        found[model_id] = {"text": repr(todo[0])}
        while todo:
            widget = todo.pop(0)
            if isinstance(widget, BaseFigureWidget):
                found[model_id] = {"figure": json.loads(pio.to_json(widget, validate=False))}
                break
            todo.extend(getattr(widget, "children", ()))
    return json.dumps(found)


def knob(
    description: str, value: float, lo: float, hi: float, step: float = 1, **options: Any
) -> Any:
    """A slider for a "Try it" cell: it reports once, when released, and shows its whole label.

    Whole numbers give an `IntSlider`, others a `FloatSlider`; `options` go to the slider (a
    `readout_format`, a `layout`, a narrower `style`).
    """
    import ipywidgets as widgets

    whole = all(float(v).is_integer() for v in (value, lo, hi, step))
    kind = widgets.IntSlider if whole else widgets.FloatSlider
    options.setdefault("style", {"description_width": "initial"})
    return kind(
        value=value,
        min=lo,
        max=hi,
        step=step,
        description=description,
        continuous_update=False,
        **options,
    )


async def live(
    controls: Sequence[Any],
    *shown: Any,
    rerun: Callable[[], Awaitable[None]],
    show_first: bool = False,
) -> Any:
    """Wire a "Try it" cell: run `rerun()` now and after every change of a control, and lay
    the controls out in a row above what they drive (a live figure, a table).

    Changes made during a run collapse into one more run (`on_change`). Returns the widget to
    show; its `stop()` stops listening to the controls. With `show_first=True` the widget is
    displayed before the first run, for a figure that fills as the run goes (don't show the
    returned widget again).
    """
    import ipywidgets as widgets

    box = widgets.VBox([widgets.HBox(list(controls)), *shown])
    if show_first:
        from IPython.display import display

        display(box)  # type: ignore[no-untyped-call]
    await rerun()
    box.stop = on_change(controls, rerun)
    return box


def on_change(controls: Any, callback: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Await `callback()` on the notebook's event loop whenever a control's value changes.

    Runs never overlap: moves made while a run is in progress collapse into one more run with
    the latest values, so a dragged slider re-measures once, not once per step. Returns a
    function that stops listening.
    """
    items = list(controls) if isinstance(controls, (list, tuple)) else [controls]
    state: dict[str, Any] = {"task": None, "again": False}

    async def worker() -> None:
        while state["again"]:
            state["again"] = False
            try:
                await callback()
            except Exception:
                # A background task has no cell to print into: log it, keep the widget alive.
                logger.exception("re-running %r after a widget change failed", callback)

    def handler(_change: Any) -> None:
        state["again"] = True
        task = state["task"]
        if task is None or task.done():
            state["task"] = asyncio.get_running_loop().create_task(worker())

    for control in items:
        control.observe(handler, names="value")

    def stop() -> None:
        for control in items:
            control.unobserve(handler, names="value")

    return stop
