"""labcache.lab.failover_figure: requests land in their 100 ms bucket, by kind, and a new run
starts from an empty figure."""

from __future__ import annotations

from labcache.lab.failover import FailoverReport
from labcache.lab.failover_figure import FailoverFigure, kind_of


def test_outcomes_map_to_the_three_kinds() -> None:
    assert [kind_of(o) for o in ("hit", "hit-l1", "fallback", "miss", "error")] == [
        "hit",
        "hit",
        "fallback",
        "error",
        "error",
    ]


def test_requests_are_counted_per_bucket_and_kind() -> None:
    fig = FailoverFigure(redraw_every=1000)
    for at, outcome in ((0.01, "hit"), (0.09, "hit"), (0.3, "fallback"), (0.31, "fallback")):
        fig.on_request(at, outcome, victim=False)
    fig.on_request(1.25, "error", victim=True)
    assert fig.counts("hit") == ([0.05], [2])
    assert fig.counts("fallback") == ([0.35], [2])
    assert fig.counts("error") == ([1.25], [1])
    assert all(len(trace.x) == 0 for trace in fig.widget.data)  # not redrawn yet
    fig.redraw()
    assert [list(trace.y) for trace in fig.widget.data] == [[2], [2], [1]]


def test_finish_titles_the_run_and_start_forgets_it() -> None:
    fig = FailoverFigure(redraw_every=1)
    fig.on_request(0.5, "fallback", victim=True)
    report = FailoverReport(killed_port=1, requests=7, fallbacks=3, recovery_seconds=2.5)
    fig.finish(report, retries=1)
    assert fig.widget.layout.title.text == (
        "1 retry: 7 requests during the failover, 3 fallbacks, 0 errors, recovered in 2.5 s"
    )
    assert len(fig.widget.layout.shapes) == 1
    fig.start()
    assert fig.counts("fallback") == ([], [])
    assert len(fig.widget.layout.shapes) == 0
    assert [list(trace.y) for trace in fig.widget.data] == [[], [], []]
