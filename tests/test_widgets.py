"""The live dashboard (Part 5), driven without a browser: controls steer the running cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import ipywidgets as widgets
import plotly.graph_objects as go
import pytest
import redis.asyncio as aioredis

from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.display import knob, live, style
from labcache.lab.widgets import Dashboard, dashboard
from labcache.lab.workload import VirtualClock, Workload
from labcache.monitor import CacheMonitor
from labcache.multilevel import MultiLevelCache


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"condition still false after {timeout} s"
        await asyncio.sleep(0.001)


@pytest.fixture(scope="module")
def db() -> InsuranceDB:
    return InsuranceDB(latency=Latency.zero())


@pytest.fixture
async def cache(redis: aioredis.Redis, namespace: str) -> AsyncIterator[MultiLevelCache]:
    async with MultiLevelCache(redis, namespace=namespace, default_ttl=60,
                               backplane=False) as cache:  # fmt: skip
        yield cache


def newly_loaded(wl: Workload, kind: str, after: int) -> str | None:
    """The key of a finished request issued after `after` that itself called the source."""
    for record in wl.records[after:]:
        if record.kind == kind and record.source_called and record.latency == record.latency:
            return record.key
    return None


async def test_ttl_sliders_change_what_the_running_cache_writes(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    wl = Workload(cache, db, rate=300, seed=1, ttls={"policy": 60, "quote": 60})
    dash = dashboard(cache, db, workload=wl, start=True)
    assert isinstance(dash, widgets.Widget) and wl.running
    try:
        await until(lambda: newly_loaded(wl, "policy", 0) is not None)
        first = newly_loaded(wl, "policy", 0)
        for name, kind in [("policy_ttl", "policy"), ("quote_ttl", "quote"),
                           ("default_ttl", "customer")]:  # fmt: skip
            dash.controls[name].value = 5
            after = wl.issued
            await until(lambda kind=kind, after=after: newly_loaded(wl, kind, after) is not None)
            key = newly_loaded(wl, kind, after)
            assert key is not None
            assert 0 < await cache.redis.pttl(cache.key(key)) <= 5000, name
        # A policy key loaded before any change still carries its 60 s TTL.
        assert first is not None and await cache.redis.pttl(cache.key(first)) > 50_000
        assert cache.default_ttl == 5.0 and wl.ttls == {"policy": 5.0, "quote": 5.0}
    finally:
        await dash.stop()
    assert [name for _, name, _ in dash.changes] == ["policy_ttl", "quote_ttl", "default_ttl"]


async def test_the_other_controls_reach_cache_and_workload(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    wl = Workload(cache, db, rate=50, requests=1)
    dash = Dashboard(cache, db, workload=wl)
    await cache.get("k", lambda: asyncio.sleep(0, "v"))
    dash.controls["memory_ttl"].value = 7
    dash.controls["l1_size"].value = 200
    dash.controls["skew"].value = 1.5
    dash.controls["rate"].value = 250
    assert cache.l1.ttl == 7.0
    assert cache.l1.maxsize == 200 and len(cache.l1) == 0  # resizing starts an empty L1
    assert (wl.skew, wl.rate) == (1.5, 250.0)


async def test_refresh_redraws_the_figures_from_the_monitor(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    clock = VirtualClock()
    monitor = CacheMonitor(interval=0.5, clock=clock)
    wl = Workload(cache, db, rate=1000, requests=30, n_keys=5, seed=2)
    dash = Dashboard(cache, db, workload=wl, monitor=monitor)
    assert isinstance(dash.figure, go.FigureWidget) and len(dash.figure.data) == 8
    traces = dash.traces
    assert all(y is None for y in traces["source"].y)  # nothing measured yet: a gap
    await wl.run()
    clock.advance(1.0)  # the interval holding the run is now complete
    dash.refresh()
    l1, l2, miss = (traces[name].y for name in ("L1 (memory)", "L2 (Redis)", "source"))
    assert traces["source"].x == (0.0, 0.5)  # the run, then an idle interval (1.0 is not over)
    assert miss[0] > 0 and miss[0] + l1[0] + l2[0] == pytest.approx(100)
    assert miss[1] is None  # no requests: a gap (None, since NaN is not valid JSON)
    assert traces["p99"].y[0] > 0 and traces["source calls/s"].y[0] == monitor.loads / 0.5
    assert "30 requests issued" in dash.status.value
    assert len(dash.refresh_times) == 2  # one at construction, one now


async def test_stop_and_buttons_leave_no_task_running(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    before = asyncio.all_tasks()
    wl = Workload(cache, db, rate=500, seed=3)  # unbounded
    dash = Dashboard(cache, db, workload=wl, refresh_every=0.01)
    dash.start()
    await until(lambda: wl.issued >= 20 and len(dash.refresh_times) >= 3)
    await dash.stop()
    assert not wl.running and asyncio.all_tasks() - before == set()
    dash.controls["start"].click()  # the buttons work the same way
    assert wl.running
    await until(lambda: wl.issued >= 10)
    dash.controls["stop"].click()
    await until(lambda: not wl.running)
    await until(lambda: not (asyncio.all_tasks() - before))
    issued = wl.issued
    dash.controls["policy_ttl"].value = 9  # still live after the run
    assert wl.ttls["policy"] == 9.0 and wl.issued == issued


async def test_a_bounded_run_stops_its_refresh_task_by_itself(
    cache: MultiLevelCache, db: InsuranceDB
) -> None:
    before = asyncio.all_tasks()
    wl = Workload(cache, db, rate=400, duration=0.1, seed=4)
    dash = dashboard(cache, db, workload=wl, start=True, refresh_every=0.02)
    await dash.wait()
    assert not wl.running and len(wl.records) == 40
    assert asyncio.all_tasks() - before == set()
    assert "idle" in dash.status.value and "40 requests issued" in dash.status.value


def test_a_live_figure_widens_once_the_page_has_a_view_of_it() -> None:
    """style() leaves autosize off until the front end counts a view, then turns it on once:
    plotly.js then measures the cell instead of drawing 700 px wide (display._fill_width)."""
    fig = style(go.FigureWidget(), "title", "x (s)", "y (ms)")
    assert fig.layout.autosize is False
    style(fig, "again", "x (s)", "y (ms)")  # styling twice does not add a second observer
    fig._view_count = 1  # what JupyterLab's widget manager sends when it creates the view
    assert fig.layout.autosize is True
    fig.layout.autosize = False
    fig._view_count = 2  # a second view (another tab) does not toggle it again
    assert fig.layout.autosize is False
    assert go.Figure().layout.autosize is None  # a static figure is left as plotly draws it
    assert style(go.Figure(), "t", "x (s)", "y (ms)").layout.autosize is None


def test_knob_picks_the_slider_kind_and_reports_only_on_release() -> None:
    whole = knob("TTL (s)", 10, 1, 60)
    assert isinstance(whole, widgets.IntSlider) and whole.continuous_update is False
    assert (whole.value, whole.min, whole.max, whole.step) == (10, 1, 60, 1)
    part = knob("XFetch β", 0.0, 0.0, 4.0, 0.5)
    assert isinstance(part, widgets.FloatSlider) and part.step == 0.5
    assert whole.style.description_width == "initial"  # the whole label shows
    narrow = knob("rate", 5, 5, 500, 5, style={"description_width": "80px"})
    assert narrow.style.description_width == "80px"


async def test_live_draws_once_then_after_each_change_until_stopped() -> None:
    ttl = knob("TTL (s)", 10, 1, 60)
    shown = widgets.HTML()
    runs: list[int] = []

    async def rerun() -> None:
        runs.append(ttl.value)
        shown.value = f"TTL {ttl.value}"

    box = await live([ttl], shown, rerun=rerun)
    assert runs == [10] and box.children[0].children == (ttl,) and box.children[1] is shown
    ttl.value = 20
    await until(lambda: runs == [10, 20])
    box.stop()
    ttl.value = 30
    for _ in range(3):  # a run, had one been scheduled, would have started by now
        await asyncio.sleep(0)
    assert runs == [10, 20] and shown.value == "TTL 20"


async def test_live_can_show_the_widget_before_its_first_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown_before: list[str] = []

    async def rerun() -> None:
        shown_before.append(capsys.readouterr().out)

    box = await live([knob("retries", 1, 0, 3)], rerun=rerun, show_first=True)
    assert shown_before and "VBox(children=(HBox(children=(IntSlider(" in shown_before[0]
    box.stop()
    assert await live([knob("retries", 1, 0, 3)], rerun=rerun) is not None
    assert "VBox" not in shown_before[-1]  # without show_first, nothing is shown by live
