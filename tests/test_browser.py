"""Every notebook, run in JupyterLab in headless Chromium, the way a student runs it.

nbval proves the kernel side; this proves the page: for each notebook, restart the kernel and
clear it from the Kernel menu, Run → Run All Cells, wait until every code cell has run and the
kernel is idle, then check that no cell shows an error, that every widget and plotly figure
rendered (titled, labelled, big enough), and save screenshots under artifacts/browser/<notebook>/.
A second test per notebook moves the first slider that steers a live figure and waits until the
figure shows new data and the kernel is idle.

JupyterLab serves a copy of notebooks/ from a temp folder (the stored notebooks are never
touched), with its own config, settings and workspaces there too, and REDIS_URL pointing at the
suite's private redis-server (set by conftest.py). Skipped when no Chromium is found
(/usr/bin/chromium, or $CHROMIUM). Knobs: LABCACHE_BROWSER_RUN_TIMEOUT (seconds per notebook run,
default 90), LABCACHE_BROWSER_SLIDER_TIMEOUT (least seconds per slider move, default 150),
LABCACHE_BROWSER_NOTEBOOKS (another folder of notebooks).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    CELL_SECONDS,
    CHROMIUM,
    CHROMIUM_ARGS,
    FIGURE_POINTS,
    FIGURE_SIGNATURES,
    FIGURES_CHANGED,
    FIND_PANEL,
    KERNEL_ACTIVITY,
    LAYOUT_SIGNATURES,
    NEEDS_CHROMIUM,
    NOTEBOOK_STATE,
    RECORD_KERNEL,
    RECORD_STATUSES,
    RENDER_SETTLED,
    RENDERED,
    JupyterLab,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = Path(os.environ.get("LABCACHE_BROWSER_NOTEBOOKS") or ROOT / "notebooks")
NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
ARTIFACTS = ROOT / "artifacts" / "browser"
RUN_TIMEOUT = float(os.environ.get("LABCACHE_BROWSER_RUN_TIMEOUT") or 90)
# Seconds a slider move may take to show new data with the kernel idle again, at least (it may
# re-run an experiment, or wait behind other kernel work: a fixed 30 s once failed under load).
SLIDER_TIMEOUT = float(os.environ.get("LABCACHE_BROWSER_SLIDER_TIMEOUT") or 150)
START_WAIT = 10.0  # the same, when the slider's output also has a start button (a dashboard)
START_BUTTON = re.compile(r"\b(start|run|play)\b", re.IGNORECASE)
STOP_BUTTON = re.compile(r"\b(stop|pause)\b", re.IGNORECASE)
VIEWPORT = {"width": 1400, "height": 3000}  # tall: one screenshot shows much of a notebook
MIN_PLOT = (300, 200)  # px: a figure smaller than this is unreadable

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
PlaywrightTimeout = sync_api.TimeoutError
pytestmark = NEEDS_CHROMIUM

# A widget's text repr instead of its view means the widget front end is missing.
WIDGET_REPR = re.compile(
    r"^\s*(FigureWidget|VBox|HBox|Box|GridBox|Tab|Accordion|interactive|Output|"
    r"\w*Slider|Dropdown|ToggleButtons|Button|Checkbox|\w*Text|HTML|Label|IntProgress|"
    r"FloatProgress)\("
)
BROKEN_WIDGET = ("Loading widget", "Error displaying widget", "Error rendering output",
                 "model not found", "Failed to load model class", "Failed to create view",
                 "Could not create a view", "Click to show javascript error")  # fmt: skip


def _js(body: str) -> str:
    """A page function of the notebook's path that evaluates the NOTEBOOK_STATE snapshot `s`."""
    return f"(path) => {{ const s = ({NOTEBOOK_STATE})(path); {body} }}"


KERNEL_IDLE = _js("return !!(s && s.ready && s.status === 'idle');")
RESTARTED_AND_CLEARED = _js(
    "return !!(s && s.ready && s.status === 'idle' && s.statuses.includes('restarting')"
    " && s.cells.every(c => c.count === null && c.outputs.length === 0 && !c.running));"
)
RUN_FINISHED = _js(
    "if (!(s && s.status === 'idle' && s.cells.every(c => !c.running))) return false;"
    " const failed = s.cells.some(c => c.outputs.some(o => o.type === 'error'));"
    " return failed || s.cells.every(c => c.count !== null);"
)
LOG_COUNT = """() => {
  const item = document.querySelector('.jp-LogConsoleStatusItem');
  const n = item ? parseInt(item.textContent.trim(), 10) : 0;
  return Number.isNaN(n) ? 0 : n;
}"""


@dataclass
class NotebookRun:
    """One notebook open in its own browser page, run at most once per session."""

    name: str
    lab: JupyterLab
    browser: Any
    page: Any = None
    run_seconds: float | None = None
    error: str | None = None  # why the run failed, once it has
    console: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"notebooks/{self.name}"

    @property
    def shots(self) -> Path:
        return ARTIFACTS / Path(self.name).stem

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(NOTEBOOK_STATE, self.path)  # type: ignore[no-any-return]

    def rendered(self) -> list[dict[str, Any]]:
        return self.page.evaluate(RENDERED, self.path)  # type: ignore[no-any-return]

    def open(self) -> None:
        """Open the notebook in a fresh page and wait for its kernel to be idle."""
        shutil.rmtree(self.shots, ignore_errors=True)
        self.shots.mkdir(parents=True)
        context = self.browser.new_context(viewport=VIEWPORT)
        self.page = context.new_page()
        self.page.on("pageerror", lambda exc: self.console.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: (
                self.console.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )
        self.page.goto(self.lab.url(self.path), wait_until="domcontentloaded", timeout=60_000)
        try:
            self.page.wait_for_function(KERNEL_IDLE, arg=self.path, timeout=120_000, polling=250)
        except PlaywrightTimeout as exc:
            self.screenshot("open-failed")
            raise AssertionError(f"{self.name}: the kernel never became idle after opening: "
                                 f"{self._dialog_text() or exc}") from exc  # fmt: skip
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        self.screenshot("stored")  # the stored outputs, as an instructor sees them before running

    def run(self) -> None:
        """Kernel → Restart and clear, then Run → Run All Cells; time it. Runs only once."""
        if self.error is not None:
            pytest.fail(f"{self.name} did not run cleanly earlier: {self.error}")
        if self.run_seconds is not None:
            return
        try:
            self._run()
        except BaseException as exc:
            self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise

    def _run(self) -> None:
        self.open()
        self.page.evaluate(RECORD_STATUSES, self.path)
        self.menu("Kernel", "kernelmenu:restart-and-clear")
        self.page.locator(".jp-Dialog .jp-mod-accept").click(timeout=30_000)
        self.page.wait_for_function(RESTARTED_AND_CLEARED, arg=self.path, timeout=120_000,
                                    polling=250)  # fmt: skip
        started = time.monotonic()
        self.menu("Run", "runmenu:run-all")
        try:
            self.page.wait_for_function(RUN_FINISHED, arg=self.path,
                                        timeout=RUN_TIMEOUT * 1000, polling=250)  # fmt: skip
        except PlaywrightTimeout as exc:
            self.screenshot_notebook("timeout")
            pending = [c["index"] for c in self.state()["cells"] if c["count"] is None]
            raise AssertionError(
                f"{self.name}: Run All did not finish in {RUN_TIMEOUT:.0f} s "
                f"(LABCACHE_BROWSER_RUN_TIMEOUT); cells not run yet: {pending}"
            ) from exc
        self.run_seconds = time.monotonic() - started
        self._wait_rendered()

    def _wait_rendered(self, timeout: float = 30.0) -> None:
        """Give widget views and figures time to appear (the check that follows says if not)."""
        with contextlib.suppress(PlaywrightTimeout):
            self.page.wait_for_function(RENDER_SETTLED, arg=self.path, timeout=timeout * 1000,
                                        polling=250)  # fmt: skip

    def menu(self, menu: str, command: str) -> None:
        """Open a top menu by its label and click the item that runs `command`."""
        self.page.locator(".lm-MenuBar-item", has_text=menu).first.click()
        self.page.locator(f'.lm-Menu-item[data-command="{command}"]').first.click()

    def _dialog_text(self) -> str:
        dialog = self.page.locator(".jp-Dialog")
        return f"a dialog is open: {dialog.first.inner_text()!r}" if dialog.count() else ""

    def screenshot(self, name: str) -> Path:
        target = self.shots / f"{name}.png"
        self.page.screenshot(path=str(target))
        return target

    def scroll_to(self, top: float) -> None:
        self.page.evaluate(
            "([path, top]) => {" + FIND_PANEL + "scroller(findPanel(path)).scrollTop = top; }",
            [self.path, top],
        )

    def _extent(self) -> tuple[float, float]:
        """(height of the notebook's content, height of its visible part), in px."""
        height, screen = self.page.evaluate(
            "(path) => {" + FIND_PANEL + "const p = findPanel(path); const n = scroller(p);"
            " const cells = p.content.widgets; const last = cells[cells.length - 1].node;"
            " const bottom = last.getBoundingClientRect().bottom - n.getBoundingClientRect().top"
            " + n.scrollTop; return [Math.min(n.scrollHeight, bottom + 40), n.clientHeight]; }",
            self.path,
        )
        return float(height), float(screen)

    def screenshot_notebook(self, name: str, max_parts: int = 40) -> list[Path]:
        """Screenshots of the whole notebook, scrolling its panel one screen at a time."""
        paths: list[Path] = []
        top = 0.0
        for part in range(1, max_parts + 1):
            self.scroll_to(top)
            self.page.wait_for_timeout(300)  # let the browser paint the newly visible cells
            paths.append(self.screenshot(f"{name}-{part:02d}"))
            # Off-screen cells are only estimated until painted, so measure again every time.
            height, screen = self._extent()
            if top + screen >= height:
                break
            top += max(screen - 80, 200)  # a little overlap, so no line is cut between two shots
        self.scroll_to(0)
        return paths

    def close(self) -> None:
        if self.page is not None:
            self.page.context.close()
            self.page = None
        # If the server is already gone, so are its kernels.
        with contextlib.suppress(OSError):
            self.lab.shutdown_kernels_for(self.path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    if not NOTEBOOKS:
        pytest.skip(f"no notebooks in {NOTEBOOKS_DIR}")
    assert os.environ.get("REDIS_URL"), "conftest.py sets REDIS_URL to the suite's redis-server"
    base = tmp_path_factory.mktemp("browser")
    root, home = base / "root", base / "home"
    shutil.copytree(NOTEBOOKS_DIR, root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))  # fmt: skip
    home.mkdir()
    server = JupyterLab(root, home, dict(os.environ)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=NOTEBOOKS)
def notebook(
    request: pytest.FixtureRequest, browser: Any, lab: JupyterLab
) -> Iterator[NotebookRun]:
    run = NotebookRun(request.param, lab, browser)
    yield run
    run.close()


def _first_line(source: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.startswith("# NBVAL")]
    return lines[0][:80] if lines else ""


def _problems(run: NotebookRun) -> list[str]:
    """Everything a student would see go wrong on the page, one line per problem."""
    state, rendered = run.state(), run.rendered()
    problems: list[str] = []
    counts = [c["count"] for c in state["cells"]]
    # "cell 33 [15]": the cell's index among all cells, then the prompt number a student sees.
    label = {c["index"]: f"cell {c['index']} [{c['count'] or ' '}]" for c in state["cells"]}
    for cell in state["cells"]:
        where = f"{label[cell['index']]} ({_first_line(cell['source'])!r})"
        for out in cell["outputs"]:
            if out["type"] == "error":
                problems.append(f"{where}: error output {out['text']}")
            elif out["name"] == "stderr" and "Traceback" in out["text"]:
                problems.append(f"{where}: traceback on stderr: {out['text'][-300:]!r}")
        if cell["count"] is None:
            problems.append(f"{where}: never ran")
    if all(c is not None for c in counts) and counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts are not 1..{len(counts)} in order: {counts}")
    expected_figures = sum(o["figures"] for c in rendered for o in c["outputs"])
    shown = sum(len(c["plots"]) for c in rendered)
    if shown < expected_figures:
        problems.append(f"{expected_figures} plotly figures in the outputs, {shown} rendered")
    for cell in rendered:
        where = label.get(cell["index"], f"cell {cell['index']}")
        for out in cell["outputs"]:
            text = out["text"]
            if out["widget"] and not out["widgetRendered"]:
                problems.append(f"{where}: a widget view did not render: {text[:120]!r}")
            if out["widgetErrors"]:
                problems.append(f"{where}: {out['widgetErrors']} widget view(s) failed to render: "
                                f"{text[:200]!r}")  # fmt: skip
            if out["plotly"] and not out["plotlyRendered"]:
                problems.append(f"{where}: a plotly figure did not render: {text[:120]!r}")
            broken = [marker for marker in BROKEN_WIDGET if marker in text]
            if broken:
                problems.append(f"{where}: {broken[0]!r} shown: {text[:200]!r}")
            if out["mime"] == "text/plain" and WIDGET_REPR.match(text):
                problems.append(f"{where}: a widget shows as text, not a view: {text[:120]!r}")
            if out["mime"] == "application/vnd.jupyter.stderr" and "Traceback" in text:
                problems.append(f"{where}: a traceback is shown: {text[-300:]!r}")
        for i, plot in enumerate(cell["plots"]):
            name = f"{where}, figure {i + 1} ({plot['title'] or 'untitled'!r})"
            if plot["width"] < MIN_PLOT[0] or plot["height"] < MIN_PLOT[1]:
                problems.append(f"{name}: too small, {plot['width']:.0f}x{plot['height']:.0f} px")
            if not plot["title"]:
                problems.append(f"{name}: no title")
            if plot["cartesian"] and not (plot["xTitles"] and plot["yTitles"]):
                problems.append(f"{name}: axes without titles (x: {plot['xTitles']}, "
                                f"y: {plot['yTitles']})")  # fmt: skip
    return problems


def _log_console(run: NotebookRun) -> str | None:
    """The log console's text if it holds messages (widget callbacks print there), else None."""
    if not run.page.evaluate(LOG_COUNT):
        return None
    run.page.evaluate("() => window.jupyterapp.commands.execute('logconsole:open')")
    panel = run.page.locator(".jp-LogConsolePanel").first
    panel.wait_for(timeout=10_000)
    run.screenshot("log-console")
    return str(panel.inner_text())[-800:]


def test_notebook_runs_clean_in_jupyterlab(notebook: NotebookRun) -> None:
    """Restart, Run All Cells: every cell runs, no errors, every widget and figure renders."""
    notebook.run()
    problems = _problems(notebook)
    shots = notebook.screenshot_notebook("run")
    log = _log_console(notebook)
    if log is not None:
        problems.append(f"the log console has messages: {log!r}")
    # An uncaught exception in the page is a front-end bug (a renderer or widget crashed);
    # ResizeObserver's loop notice is a benign browser warning that Chromium reports as one.
    problems += [e for e in notebook.console
                 if e.startswith("page error:") and "ResizeObserver" not in e]  # fmt: skip
    rendered = notebook.rendered()
    figures = sum(o["figures"] for c in rendered for o in c["outputs"])
    summary = {"notebook": notebook.name, "run_seconds": round(notebook.run_seconds or 0, 1),
               "figures_expected_at_least": figures,
               "figures_rendered": sum(len(c["plots"]) for c in rendered),
               "widget_views": sum(o["widget"] for c in rendered for o in c["outputs"]),
               "screenshots": [str(p.relative_to(ROOT)) for p in shots],
               "console_errors": notebook.console[:20], "problems": problems}  # fmt: skip
    (notebook.shots / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{notebook.name}: Run All took {notebook.run_seconds:.1f} s in the browser")
    assert not problems, f"{notebook.name} in JupyterLab:\n  " + "\n  ".join(problems)


def _sliders(run: NotebookRun) -> list[dict[str, Any]]:
    """Every enabled slider on the page, in page order, with its cell and that cell's figures."""
    return run.page.evaluate(  # type: ignore[no-any-return]
        "(path) => {"
        + FIND_PANEL
        + """
      const panel = findPanel(path);
      const all = [...panel.content.node.querySelectorAll('.widget-slider')];
      const cells = panel.content.widgets;
      return all.map((s, nth) => {
        const cellNode = s.closest('.jp-Cell');
        const index = cells.findIndex(c => c.node === cellNode);
        const prompt = cellNode ? cellNode.querySelector('.jp-InputPrompt') : null;
        return {nth, cell: index, prompt: prompt ? prompt.textContent.trim().replace(/:$/, '') : '',

                label: ((s.querySelector('.widget-label') || {}).textContent || '').trim(),
                readout: ((s.querySelector('.widget-readout') || {}).textContent || '').trim(),
                disabled: !!s.querySelector('.noUi-target[disabled]'),
                livePlots: cellNode ? cellNode.querySelectorAll(
                  '[data-mime-type="application/vnd.jupyter.widget-view+json"] .js-plotly-plot'
                ).length : 0};
      });
    }""",
        run.path,
    )


SLIDER_VALUE = """([nth]) => {
  const s = document.querySelectorAll('.jp-Notebook .widget-slider')[nth];
  const readout = s.querySelector('.widget-readout');
  const handle = [...s.querySelectorAll('.noUi-handle')].pop();
  if (readout) return readout.textContent.trim();
  return handle ? handle.getAttribute('aria-valuenow') : '';
}"""


def _move(run: NotebookRun, nth: int, keys: tuple[str, ...] = ("End", "Home")) -> tuple[str, str]:
    """Press End on the slider's handle (Home if it is already at the end); return the values."""
    slider = run.page.locator(".jp-Notebook .widget-slider").nth(nth)
    handle = slider.locator(".noUi-handle").last
    handle.scroll_into_view_if_needed()
    before = run.page.evaluate(SLIDER_VALUE, [nth])
    changed = "([nth, before]) => (" + SLIDER_VALUE + ")([nth]) !== before"
    for key in keys:
        handle.focus()
        handle.press(key)
        try:
            run.page.wait_for_function(changed, arg=[nth, before], timeout=5_000, polling=100)
        except PlaywrightTimeout:
            continue
        return before, run.page.evaluate(SLIDER_VALUE, [nth])
    return before, before


def _wait_stable(run: NotebookRun, timeout: float = 30.0) -> None:
    """For the 'after' screenshot only: wait until the figures stop changing for a second."""
    deadline, last, same = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline and same < 4:
        sig = run.page.evaluate(FIGURE_SIGNATURES, run.path)
        same = same + 1 if sig == last else 0
        last = sig
        run.page.wait_for_timeout(250)


def _wait_kernel_idle(run: NotebookRun, timeout: float) -> None:
    """Wait until the page and the server both see the notebook's kernel idle."""
    deadline = time.monotonic() + timeout
    while True:
        activity = run.page.evaluate(KERNEL_ACTIVITY, [run.path, time.time()])
        server = _server_state(run, activity["id"])
        if activity["status"] == "idle" and server in (None, "idle"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{run.name}: before moving a slider, the kernel is still "
                                 f"{activity['status']} (server: {server}) after "
                                 f"{timeout:.0f} s")  # fmt: skip
        run.page.wait_for_timeout(250)


def _server_state(run: NotebookRun, kernel_id: str | None) -> str | None:
    """The server's view of a kernel's execution_state (busy, idle, ...); None if unknown."""
    if not kernel_id:
        return None
    try:
        return str(run.lab.api("GET", f"/api/kernels/{kernel_id}").get("execution_state"))
    except (OSError, ValueError):
        return None


@dataclass
class Reaction:
    """What the figures and the kernel did after a slider move (seconds count from the move)."""

    started: float  # time.time() at the move
    waited: float = 0.0
    changed: list[int] | None = None  # the figures that showed new data, once some did
    changed_at: float | None = None
    status: str = "unknown"  # the kernel's status at the last poll (page, and server if it differs)
    status_since: float = 0.0
    events: list[list[Any]] = field(default_factory=list)  # [seconds, what, how many times]

    @property
    def idle(self) -> bool:
        return self.status == "idle"

    @property
    def done(self) -> bool:
        return self.changed is not None and self.idle

    def note(self, seconds: float, what: str) -> None:
        if self.events and self.events[-1][1] == what:
            self.events[-1][2] += 1
        else:
            self.events.append([seconds, what, 1])

    def timeline(self, last: int = 14) -> str:
        shown = [f"{t:+.1f} s {what}" + (f" x{n}" if n > 1 else "") for t, what, n in self.events]
        skipped = len(shown) - last
        return "; ".join((["..."] if skipped > 0 else []) + shown[-last:]) or "nothing"

    def summary(self) -> str:
        if self.done:
            idle = max([t for t, what, _ in self.events if what.startswith("status idle")]
                       + [self.status_since])  # fmt: skip
            return (f"figure(s) {self.changed} showed new data after {self.changed_at:.1f} s, "
                    f"the kernel last went idle at {idle:.1f} s")  # fmt: skip
        if self.changed is not None:  # changed, but the kernel never settled
            what = (f"figure(s) {self.changed} showed new data after {self.changed_at:.1f} s, "
                    f"but the kernel is still {self.status} (since "
                    f"{self.status_since:.1f} s)")  # fmt: skip
        elif self.idle:
            what = (f"the kernel is idle (since {self.status_since:.1f} s) but no figure showed "
                    "new data")  # fmt: skip
        else:
            what = (f"no figure showed new data and the kernel is still {self.status} (since "
                    f"{self.status_since:.1f} s: the move is queued behind other work, or its "
                    "handler is still running)")  # fmt: skip
        replied = any(what.startswith("comm_msg") for _, what, _ in self.events)
        silent = "" if replied else "; the kernel sent no widget message after the move"
        return f"after {self.waited:.0f} s, {what}{silent} (kernel: {self.timeline()})"


def _await_reaction(
    run: NotebookRun, before: list[list[str]], timeout: float, quiet: float | None = None
) -> Reaction:
    """Poll until some figure shows a data point not in `before` AND the kernel is idle.

    Neither is proof alone: new data may be the first step of several, and an idle kernel may
    still run the handler as a task (labcache's on_change does). So both must hold at one poll,
    the kernel's status read from the page and from the server's REST API (they must agree).
    With `quiet`, give up early once the kernel has been idle that long with nothing changed.
    """
    reaction = Reaction(started=time.time())
    deadline = time.monotonic() + timeout
    seen = reaction.started - 2.0  # the move's own messages may precede `started` a little
    while True:
        activity = run.page.evaluate(KERNEL_ACTIVITY, [run.path, seen])
        changed = run.page.evaluate(FIGURES_CHANGED, [run.path, before])
        server = _server_state(run, activity["id"])
        now = time.time() - reaction.started
        for t, kind, state, parent, method in activity["messages"]:
            if t > seen:
                what = f"status {state} ({parent})" if kind == "status" else f"{kind} {method}"
                reaction.note(t - reaction.started, what.strip())
                seen = t
        page = activity["status"]
        status = page if server in (None, page) else f"{page} (server: {server})"
        if status != reaction.status:
            reaction.status, reaction.status_since = status, max(now, 0.0)
        if changed and reaction.changed is None:
            reaction.changed, reaction.changed_at = list(changed), now
            reaction.note(now, f"figure(s) {reaction.changed} changed")
        reaction.waited = now
        gave_up = (quiet is not None and reaction.changed is None and reaction.idle
                   and now - reaction.status_since >= quiet and now >= quiet)  # fmt: skip
        if reaction.done or gave_up or time.monotonic() > deadline:
            return reaction
        run.page.wait_for_timeout(500)


def _time_left(request: pytest.FixtureRequest, began: float, margin: float = 30.0) -> float:
    """Seconds before pytest-timeout stops this test (begun at `began`), less a margin."""
    try:
        limit = float(request.config.getoption("timeout") or request.config.getini("timeout") or 0)
    except (ValueError, TypeError):  # pytest-timeout absent, or an odd value: no limit known
        limit = 0.0
    return float("inf") if limit <= 0 else limit - (time.monotonic() - began) - margin


def _slider_timeout(run: NotebookRun, cell: int, budget: float) -> float:
    """How long one move may take: SLIDER_TIMEOUT, or more if the cell's own run was long.

    A move re-runs (part of) what the slider's cell ran in Run All, under the same load, so ten
    times that cell's run is a generous bound that grows with the load; `budget` is what is
    left of the test's pytest-timeout, so that the failure message is this test's, not a kill.
    """
    seconds = run.page.evaluate(CELL_SECONDS, [run.path, cell])
    wanted = max(SLIDER_TIMEOUT, 10 * float(seconds or 0))
    return max(min(wanted, budget), 10.0)


def _button(cell: Any, pattern: re.Pattern[str]) -> Any:
    """The first enabled widget button in `cell` whose label matches, or None."""
    buttons = cell.locator("button.jupyter-button")
    for i in range(buttons.count()):
        button = buttons.nth(i)
        if pattern.search(button.text_content() or "") and button.is_enabled():
            return button
    return None


def test_slider_updates_live_figure(notebook: NotebookRun, request: pytest.FixtureRequest) -> None:
    """Moving the first slider linked to a FigureWidget makes that figure show new data.

    A slider that re-runs its experiment must change the figure by itself. A dashboard's sliders
    steer a *running* workload instead: when the slider's output has a start/run button and the
    move alone changes nothing, the test presses it, moves the slider back and waits again.
    Every wait ends when a figure shows new data and the kernel is idle, never at a fixed time.
    """
    began = time.monotonic()
    notebook.run()
    sliders = [s for s in _sliders(notebook) if not s["disabled"]]
    if not sliders:
        pytest.skip(f"{notebook.name} has no slider")
    # Sliders that share a cell (an output) with a live figure first, then the rest in page order.
    # One slider per cell, at most two cells: sliders that share a cell usually share a fate.
    ordered = sorted(sliders, key=lambda s: (s["livePlots"] == 0, s["nth"]))
    candidates = [s for s in ordered if s is next(t for t in ordered if t["cell"] == s["cell"])]
    candidates = candidates[:2]
    tried = []
    for slider in candidates:
        label = repr(slider["label"]) if slider["label"] else "(no description)"
        name = f"slider {label} in cell {slider['cell']} {slider['prompt']}".rstrip()
        # A move made while the kernel is busy waits behind that work: start from an idle kernel.
        _wait_kernel_idle(notebook, max(min(SLIDER_TIMEOUT, _time_left(request, began)), 10.0))
        notebook.page.evaluate(RECORD_KERNEL, notebook.path)
        logs_before = notebook.page.evaluate(LOG_COUNT)
        before = notebook.page.evaluate(FIGURE_POINTS, notebook.path)
        layouts = notebook.page.evaluate(LAYOUT_SIGNATURES, notebook.path)
        cell = notebook.page.locator(".jp-Notebook .jp-Cell").nth(slider["cell"])
        start = _button(cell, START_BUTTON)
        notebook.page.locator(".jp-Notebook .widget-slider").nth(
            slider["nth"]).scroll_into_view_if_needed()  # fmt: skip
        notebook.screenshot("slider-before")
        cell.screenshot(path=str(notebook.shots / "slider-cell-before.png"))

        def timeout(cell_index: int = slider["cell"]) -> float:
            return _slider_timeout(notebook, cell_index, _time_left(request, began))

        old, new = _move(notebook, slider["nth"])
        if old == new:
            tried.append(f"{name}: End/Home did not move it (readout {old!r})")
            continue
        limit = timeout()
        reaction = _await_reaction(notebook, before, limit, quiet=START_WAIT if start else None)
        how = "the slider re-ran the experiment"
        if start is not None and reaction.changed is None and reaction.idle:
            label = (start.text_content() or "").strip()
            start.click()
            limit = timeout()
            pressed = _await_reaction(notebook, before, limit)
            if not pressed.done:
                tried.append(f"{name}: moving it changed nothing; after pressing {label!r}, "
                             f"{pressed.summary()}")  # fmt: skip
                continue
            before = notebook.page.evaluate(FIGURE_POINTS, notebook.path)
            old, new = _move(notebook, slider["nth"], keys=("Home", "End"))
            limit = timeout()
            reaction = _await_reaction(notebook, before, limit)
            how = (
                f"moving it alone changed nothing; after pressing {label!r}, the figure updated "
                "live while the slider moved (a dashboard steering a running workload)"
            )
        if not reaction.done:
            now = notebook.page.evaluate(LAYOUT_SIGNATURES, notebook.path)
            hint = "; only a layout changed" if now != layouts else ""
            tried.append(f"{name}: moved {old!r} -> {new!r} and waited up to {limit:.0f} s: "
                         f"{reaction.summary()}{hint}")  # fmt: skip
            continue
        assert reaction.changed is not None  # done: new data, and the kernel idle
        _wait_stable(notebook)
        figure = notebook.page.locator(".jp-Notebook .js-plotly-plot").nth(reaction.changed[0])
        figure.scroll_into_view_if_needed()
        notebook.screenshot("slider-after")
        figure.screenshot(path=str(notebook.shots / "slider-figure-after.png"))
        cell.screenshot(path=str(notebook.shots / "slider-cell-after.png"))
        ran = notebook.page.evaluate(CELL_SECONDS, [notebook.path, slider["cell"]])
        ran_for = f", its cell ran in {ran:.1f} s" if ran is not None else ""
        print(f"\n{notebook.name}: {name} moved {old!r} -> {new!r}; {reaction.summary()} "
              f"(limit {limit:.0f} s{ran_for}); {how}")  # fmt: skip
        stop = _button(cell, STOP_BUTTON)
        if start is not None and stop is not None:
            stop.click()
        problems = _problems(notebook)
        if notebook.page.evaluate(LOG_COUNT) > logs_before:
            problems.append(f"the log console got messages after the move: "
                            f"{_log_console(notebook)!r}")  # fmt: skip
        assert not problems, f"{notebook.name} after moving {name}:\n  " + "\n  ".join(problems)
        return
    pytest.fail(f"{notebook.name}: no slider steered a figure:\n  " + "\n  ".join(tried))
