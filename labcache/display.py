"""Notebook helpers: one colour per cache level in every figure, and library source on demand."""

from __future__ import annotations

import inspect
from typing import Any

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
    return fig


def show(obj: Any) -> Any:
    """Display the source of a labcache function or class, highlighted, in a notebook."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")  # type: ignore[no-untyped-call]
