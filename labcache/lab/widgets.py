"""Part 5: a live dashboard: a workload runs, plots follow it, and sliders steer it as it runs.

The knobs act on the running objects themselves, so a change applies to the very next request:
the TTL sliders set `cache.default_ttl` and the workload's per-kind `ttls` (read on every
request), `memory_ttl` sets `cache.l1.ttl`, the L1 slider calls `cache.resize_l1()`, and skew
and rate set the workload's. The plots are redrawn from the monitor's time series by one task that
`stop()` cancels (the lab's timers never stopped: mistake 10). Everything is a plain attribute,
so a test can move a slider and call `refresh()` without a browser.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labcache.lab.data import InsuranceDB
from labcache.lab.display import COLORS, knob, style
from labcache.lab.workload import Workload
from labcache.monitor import CacheMonitor
from labcache.multilevel import MultiLevelCache
from labcache.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

_LEVELS = (("l1", "L1 (memory)"), ("l2", "L2 (Redis)"), ("stale", "stale"), ("source", "source"))


class Dashboard(widgets.VBox):  # type: ignore[misc]
    """Controls, a live three-panel figure and a status line for a workload against a cache."""

    def __init__(
        self,
        cache: MultiLevelCache,
        db: InsuranceDB,
        *,
        workload: Workload | None = None,
        monitor: CacheMonitor | None = None,
        refresh_every: float = 0.3,
        history: float = 60.0,
        ttl_max: int = 120,
    ) -> None:
        self.cache = cache
        self.db = db
        self.workload = workload or Workload(cache, db, duration=15.0, skew=1.0, n_keys=500)
        self.monitor = monitor or CacheMonitor(interval=0.5)
        self.monitor.attach(cache)
        self.refresh_every = refresh_every
        self.history = history
        self.refresh_times: list[float] = []  # seconds per refresh(), to report its cost
        self.changes: list[tuple[float, str, float]] = []  # (monitor time, control, new value)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        ttls = self.workload.ttls
        for kind in ("policy", "quote"):
            ttls.setdefault(kind, cache.default_ttl)
        self.controls: dict[str, widgets.Widget] = self._build_controls(ttl_max)
        self.figure = self._build_figure()
        self.traces = {trace.name: trace for trace in self.figure.data}
        self.status = widgets.HTML()
        buttons = widgets.HBox([self.controls["start"], self.controls["stop"], self.status])
        sliders = [c for c in self.controls.values() if not isinstance(c, widgets.Button)]
        grid = widgets.GridBox(
            sliders, layout=widgets.Layout(grid_template_columns="repeat(3, 330px)")
        )
        super().__init__([buttons, grid, self.figure])
        self.refresh()

    # -- controls ----------------------------------------------------------------------------

    def _build_controls(self, ttl_max: int) -> dict[str, widgets.Widget]:
        cache, wl = self.cache, self.workload

        def seconds(label: str, value: float) -> widgets.IntSlider:
            top = max(ttl_max, round(value))
            return slider(label, max(1, round(value)), 1, top, 1)

        def slider(label: str, value: float, lo: float, hi: float, step: float) -> Any:
            return knob(label, value, lo, hi, step, style={"description_width": "120px"},
                        layout=widgets.Layout(width="320px"))  # fmt: skip

        controls: dict[str, widgets.Widget] = {
            "default_ttl": seconds("DEFAULT TTL (s)", cache.default_ttl),
            "policy_ttl": seconds("POLICY TTL (s)", wl.ttls["policy"]),
            "quote_ttl": seconds("QUOTE TTL (s)", wl.ttls["quote"]),
            "memory_ttl": seconds("memory TTL (s)", cache.l1.ttl),
            "l1_size": slider("L1 size (entries)",
                              int(cache.l1.maxsize), 10, max(5000, int(cache.l1.maxsize)), 10),
            "skew": slider("Zipf skew", wl.skew, 0.0, 2.0, 0.1),
            "rate": slider("rate (req/s)", round(wl.rate), 5,
                           max(500, round(wl.rate)), 5),
            "start": widgets.Button(description="start", button_style="success", icon="play"),
            "stop": widgets.Button(description="stop", button_style="danger", icon="stop"),
        }  # fmt: skip
        appliers: dict[str, Callable[[Any], None]] = {
            "default_ttl": lambda v: setattr(cache, "default_ttl", float(v)),
            "policy_ttl": lambda v: wl.ttls.__setitem__("policy", float(v)),
            "quote_ttl": lambda v: wl.ttls.__setitem__("quote", float(v)),
            "memory_ttl": lambda v: setattr(cache.l1, "ttl", float(v)),
            "l1_size": lambda v: cache.resize_l1(int(v)),  # a new, empty L1 of that size
            "skew": lambda v: setattr(wl, "skew", float(v)),
            "rate": lambda v: setattr(wl, "rate", float(v)),
        }
        for name, apply in appliers.items():
            controls[name].observe(self._applier(name, apply), names="value")
        controls["start"].on_click(lambda _button: self._soon(self.start))
        controls["stop"].on_click(lambda _button: self._soon(self._stop_in_background))
        return controls

    def _applier(self, name: str, apply: Callable[[Any], None]) -> Callable[[dict[str, Any]], None]:
        def on_change(change: dict[str, Any]) -> None:
            apply(change["new"])
            self.changes.append((self.monitor.clock() - self.monitor.started, name, change["new"]))
            logger.info("dashboard: %s = %s", name, change["new"])

        return on_change

    def _soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the event loop: button callbacks may arrive outside of it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                logger.error("dashboard: no event loop to run %s on", fn)
                return
            self._loop.call_soon_threadsafe(fn)
        else:
            fn()

    # -- figures -----------------------------------------------------------------------------

    def _build_figure(self) -> go.FigureWidget:
        """One FigureWidget with three rows: one widget model (its JS bundle is megabytes)."""
        grid = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                             subplot_titles=("Where requests were served (hit rate = L1 + L2)",
                                             "Request latency, p50 and p99",
                                             "Requests and source (database) calls"))  # fmt: skip
        fig = go.FigureWidget(grid)
        for level, label in _LEVELS:
            band = {"color": COLORS[level], "width": 0.5}
            fig.add_scatter(name=label, stackgroup="served", mode="lines", line=band, row=1, col=1)
        for name, row, line in [
            ("p50", 2, {"color": COLORS["hit"]}),
            ("p99", 2, {"color": COLORS["miss"], "dash": "dot"}),
            ("requests/s", 3, {"color": COLORS["error"]}),
            ("source calls/s", 3, {"color": COLORS["source"]}),
        ]:
            fig.add_scatter(name=name, mode="lines", line=line, row=row, col=1)
        title = f"Live cache metrics, per {self.monitor.interval:g} s interval"
        style(fig, title, "", "", height=760)
        legend = {"orientation": "v", "x": 1.02, "y": 1, "traceorder": "normal"}
        fig.update_layout(legend=legend, margin={"t": 90})
        fig.update_yaxes(title_text="share of requests (%)", range=[0, 100], row=1, col=1)
        fig.update_yaxes(title_text="latency (ms, log)", type="log", row=2, col=1)
        fig.update_yaxes(title_text="per second", rangemode="tozero", row=3, col=1)
        fig.update_xaxes(title_text="time since the monitor started (s)", row=3, col=1)
        return fig

    def refresh(self) -> None:
        """Redraw the figure and the status line from the monitor (a few ms; timed)."""
        began = time.perf_counter()
        mon, wl = self.monitor, self.workload
        frame = mon.series(last=self.history)  # whole intervals only: a partial one is noisy
        t = frame["t_s"].tolist()
        columns = [f"{level}_rate" for level, _ in _LEVELS]
        columns += ["p50_ms", "p99_ms", "requests_per_s", "source_calls_per_s"]
        scale = [100.0] * len(_LEVELS) + [1.0] * 4
        start = t[0] if t else 0.0
        with self.figure.batch_update():
            for trace, column, factor in zip(self.figure.data, columns, scale, strict=True):
                # None, not NaN, marks a gap: NaN is not valid JSON for the front end.
                trace.x, trace.y = t, [None if v != v else v * factor for v in frame[column]]
            # One line per panel, spanning only that panel's plot area ("y2 domain"): a line
            # over the whole paper would cross the subplot titles between the panels.
            self.figure.layout.shapes = [
                {"type": "line", "x0": at, "x1": at, "y0": 0, "y1": 1,
                 "xref": f"x{axis}", "yref": f"y{axis} domain",
                 "line": {"color": COLORS["naive"], "dash": "dash", "width": 1}}
                for at, _, _ in self.changes if at >= start
                for axis in ("", "2", "3")
            ]  # fmt: skip
        state = "running" if wl.running else "idle"
        recent = frame["p99_ms"].dropna()
        p99 = f"{recent.iloc[-1]:.1f} ms" if len(recent) else "n/a"
        self.status.value = (
            f"<b>{state}</b> · {wl.issued} requests issued, {wl.in_flight} in flight · hit rate "
            f"{mon.hit_rate:.1%} (last {mon.window:g} s: {mon.window_hit_rate():.1%}) · "
            f"p99 {p99} · {mon.loads} source calls"
        )
        self.refresh_times.append(time.perf_counter() - began)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workload (unless running) and the refresh task (needs the event loop)."""
        if not self.workload.running:
            self.workload.start()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="labcache-dashboard")

    async def stop(self) -> None:
        """Stop the workload and the refresh task; the controls stay usable (start again)."""
        await self.workload.stop()
        await cancel_and_wait([self._refresher])
        self.refresh()

    async def wait(self) -> None:
        """Wait until the workload's run ends and the plots have caught up."""
        if self.workload.running:
            await self.workload.run()
        if self._refresher is not None:
            await asyncio.wait([self._refresher])

    def _stop_in_background(self) -> None:
        task = asyncio.create_task(self.stop(), name="labcache-dashboard-stop")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_loop(self) -> None:
        while True:
            running = self.workload.running  # read first, so the last redraw follows the end
            try:
                self.refresh()
            except Exception:
                logger.exception("dashboard refresh failed; live updates stop")
                return
            if not running:
                return
            await asyncio.sleep(self.refresh_every)


def dashboard(
    cache: MultiLevelCache,
    db: InsuranceDB,
    *,
    workload: Workload | None = None,
    monitor: CacheMonitor | None = None,
    start: bool = False,
    **options: Any,
) -> Dashboard:
    """Build the live dashboard (an ipywidgets widget); `start=True` also starts the run."""
    dash = Dashboard(cache, db, workload=workload, monitor=monitor, **options)
    if start:
        dash.start()
    return dash
