"""The live figure of notebook 08's failover drill: requests per 100 ms, by how they were served.

`FailoverFigure().widget` is a plotly `FigureWidget` with three stacked bars (Redis hit, fallback
to the loader, error seen by a caller); pass `on_request` to `failover_drill` and each request
lands in its 100 ms bucket as it completes (the figure redraws every 15 requests), then
`finish(report, retries)` marks the recovery and titles the run.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from labcache.lab.display import COLORS, style

if TYPE_CHECKING:
    from labcache.lab.failover import FailoverReport

KINDS = ("hit", "fallback", "error")  # the figure's traces, in this order
BUCKET = 0.1  # seconds per bar (a tenth: buckets are `int(at * 10) / 10`)


def kind_of(outcome: str) -> str:
    """The figure's kind of a drill outcome: hit, fallback, or anything else an error."""
    return next((kind for kind in KINDS[:2] if outcome.startswith(kind)), "error")


class FailoverFigure:
    """A FigureWidget that counts a failover drill's requests per 100 ms bucket and kind."""

    def __init__(self, redraw_every: int = 15) -> None:
        import plotly.graph_objects as go

        self.widget = go.FigureWidget()
        names = ("Redis hit", "fallback to the loader", "error seen by a caller")
        for name, color in zip(names, (COLORS["l2"], COLORS["miss"], COLORS["error"]), strict=True):
            self.widget.add_bar(x=[], y=[], name=name, marker_color=color)
        style(
            self.widget,
            "requests per 100 ms while a primary fails over",
            "time since the primary was killed (s)",
            "requests (count per 100 ms)",
            barmode="stack",
        )
        self.redraw_every = redraw_every
        self.buckets: dict[str, Counter[float]] = {kind: Counter() for kind in KINDS}
        self.seen = 0

    def start(self) -> None:
        """Forget the last run: empty buckets, no recovery line."""
        self.buckets = {kind: Counter() for kind in KINDS}
        self.seen = 0
        self.widget.layout.shapes, self.widget.layout.annotations = (), ()
        self.redraw()

    def on_request(self, at: float, outcome: str, victim: bool) -> None:
        """`failover_drill`'s callback: one request, `at` seconds after the kill."""
        self.buckets[kind_of(outcome)][round(int(at * 10) / 10, 1)] += 1
        self.seen += 1
        if self.seen % self.redraw_every == 0:
            self.redraw()

    def counts(self, kind: str) -> tuple[list[float], list[int]]:
        """The bars of one kind: each bucket's middle (s) and its request count."""
        xs = sorted(self.buckets[kind])
        return [round(x + BUCKET / 2, 2) for x in xs], [self.buckets[kind][x] for x in xs]

    def redraw(self) -> None:
        """Show the buckets as they stand."""
        with self.widget.batch_update():
            for trace, kind in zip(self.widget.data, KINDS, strict=True):
                trace.x, trace.y = self.counts(kind)

    def finish(self, report: FailoverReport, retries: int) -> None:
        """Draw the last requests, a line where keys were hits again, and the run as the title."""
        self.redraw()
        if report.recovery_seconds is not None:
            self.widget.add_vline(
                x=report.recovery_seconds, line_dash="dot", annotation_text="hits again"
            )
        recovered = (
            "never recovered"
            if report.recovery_seconds is None
            else f"recovered in {report.recovery_seconds:.1f} s"
        )
        self.widget.layout.title = (
            f"{retries} retr{'y' if retries == 1 else 'ies'}: {report.requests} requests during "
            f"the failover, {report.fallbacks} fallbacks, {report.errors} errors, {recovered}"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
