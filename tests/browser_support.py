"""Support for tests/test_browser.py: a private JupyterLab server, and the JavaScript that reads it.

JupyterLab runs with `expose_app_in_browser`, so the test can read the notebook model (execution
counts, output types, kernel status) exactly, while every action a student takes (restart, run
all, move a slider) still goes through the menus and widgets on the page.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labcache.embedded import free_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# User settings JupyterLab reads at start: no news/update pop-up over the screenshots.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # Each cell's run is timed in its metadata: a slider's wait scales with its cell's run time.
    "@jupyterlab/notebook-extension/tracker": {"recordTiming": True},
}


# Starts JupyterLab after asking Linux to SIGTERM it when the test process dies, however it dies
# (a CI timeout's SIGKILL included), so no server outlives the test run. The setting survives exec.
LAUNCH_LAB = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    try:
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", *sys.argv[1:]])
"""


def find_chromium() -> str | None:
    """`$CHROMIUM` (a path or a name on PATH), else Debian's /usr/bin/chromium; None if absent."""
    wanted = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    found = shutil.which(wanted)
    return found if found and os.path.isfile(found) else None


CHROMIUM = find_chromium()
# The marks of a test that drives Chromium: `-m browser` selects it, and it skips without one.
NEEDS_CHROMIUM = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason=f"no Chromium at {os.environ.get('CHROMIUM') or '/usr/bin/chromium'}: install "
        "Debian's (apt-get install chromium) or point $CHROMIUM at one",
    ),
]


class JupyterLab:
    """A headless JupyterLab on a free loopback port, with a token, serving `root`.

    Its config, data, runtime, settings and workspace folders all live under `home`, so nothing
    from the user's own Jupyter set-up leaks in and nothing the test does leaks out.
    """

    def __init__(self, root: Path, home: Path, env: dict[str, str]) -> None:
        self.root = root
        self.home = home
        self.env = env
        self.token = secrets.token_hex(16)
        self.port = 0
        self.log_path = home / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The page URL that opens `path` (relative to root) in a fresh workspace, logged in."""
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def start(self, timeout: float = 120.0) -> JupyterLab:
        settings = self.home / "settings"
        for plugin, values in LAB_SETTINGS.items():
            target = settings / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values, indent=2))
        env = dict(self.env)
        for var, sub in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ]:
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.home / sub)
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(self.home / "workspaces")
        env["PYTHONUNBUFFERED"] = "1"
        self.port = free_port()
        cmd = [
            sys.executable,
            "-c",
            LAUNCH_LAB,
            "--no-browser",
            "--ServerApp.open_browser=False",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"JupyterLab exited with code {code} before it was ready:\n"
                                   f"{self.log_tail()}")  # fmt: skip
            if self._ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"JupyterLab not ready after {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.25)  # polling for readiness, not a wait-and-hope

    def _ready(self) -> bool:
        try:
            status = self.api("GET", "/api/status")
            with urllib.request.urlopen(f"{self.base}/lab?token={self.token}", timeout=10) as page:
                return bool(status) and page.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the server's REST API, authenticated with the token."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels_for(self, path: str) -> None:
        """Delete the sessions (and so the kernels) of `path`, freeing CPU for the next notebook."""
        for session in self.api("GET", "/api/sessions"):
            if session.get("path") == path:
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down through its API (which stops its kernels), then by signal."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            self.api("POST", "/api/shutdown")
            proc.wait(timeout=timeout)
        except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# --- JavaScript evaluated in the page -------------------------------------------------------
# Each takes the notebook's path (relative to the server root) and finds its panel by it.

FIND_PANEL = """
function findPanel(path) {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.content.model) return w;
  }
  return null;
}
function scroller(panel) {
  // The element that scrolls the notebook (JupyterLab 4 scrolls an inner windowed panel).
  const nodes = [panel.content.node, ...panel.node.querySelectorAll('.jp-WindowedPanel-outer')];
  return nodes.reduce((a, b) => (b.scrollHeight - b.clientHeight > a.scrollHeight - a.clientHeight
                                 ? b : a));
}
"""

# The model's view of the notebook: kernel status and every code cell's count and outputs.
NOTEBOOK_STATE = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  if (!panel) return null;
  const ctx = panel.sessionContext;
  const kernel = ctx.session ? ctx.session.kernel : null;
  const cells = [];
  const model = panel.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const c = model.cells.get(i);
    if (c.type !== 'code') continue;
    const outputs = c.outputs.toJSON().map(o => {
      const data = o.data || {};
      let text = o.text || data['text/plain'] || '';
      if (Array.isArray(text)) text = text.join('');
      if (o.output_type === 'error') text = o.ename + ': ' + o.evalue;
      return {type: o.output_type, name: o.name || null, mimes: Object.keys(data),
              text: String(text).slice(0, 4000)};
    });
    cells.push({index: i, count: c.executionCount,
                running: c.executionState === 'running',
                source: c.sharedModel.getSource().slice(0, 300), outputs});
  }
  return {ready: panel.context.isReady && ctx.isReady,
          status: kernel ? kernel.status : 'no-kernel',
          kernelName: kernel ? kernel.name : null,
          statuses: window.__labcacheStatuses || [],
          cells};
}"""
)

# Start recording every kernel status change of the notebook (to see a restart happen).
RECORD_STATUSES = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  window.__labcacheStatuses = [];
  panel.sessionContext.statusChanged.connect((_, s) => window.__labcacheStatuses.push(s));
  return true;
}"""
)

# What the page shows: every output, every widget view, every plotly figure, per cell.
RENDERED = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  if (!panel) return null;
  const result = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    // Output i of the model is child i of the output area; JupyterLab renders its preferred mime.
    const area = cell.outputArea;
    const outputs = [];
    for (let i = 0; i < area.model.length; i++) {
      const model = area.model.get(i);
      const data = model.data || {};
      const mime = area.rendermime.preferredMimeType(data, 'any') || '';
      const child = area.widgets[i];
      const node = child ? (child.node.querySelector('.jp-OutputArea-output') || child.node) : null;
      const text = node ? (node.textContent || '') : '';
      const widget = mime === 'application/vnd.jupyter.widget-view+json';
      const plotly = mime === 'application/vnd.plotly.v1+json';
      const plain = String(data['text/plain'] || '');
      const box = node ? node.getBoundingClientRect() : {width: 0, height: 0};
      outputs.push({
        type: model.type, mime, text: text.slice(0, 4000), widget, plotly,
        // The view's element is attached (ipywidgets and anywidget views differ in classes).
        widgetRendered: !!(node && node.childElementCount > 0),
        // ipywidgets draws a view it could not create (a missing front end) as an error widget.
        widgetErrors: node
          ? node.querySelectorAll('.jupyter-widgets-error-widget, .widget-error').length : 0,
        plotlyRendered: !!(node && node.querySelector('.js-plotly-plot .main-svg, .main-svg')),
        // A widget's text/plain repr names the FigureWidgets inside it (a lower bound: it is
        // truncated for deep trees).
        figures: plotly ? 1 : (widget ? (plain.match(/FigureWidget/g) || []).length : 0),
        width: box.width, height: box.height,
      });
    }
    const plots = [];
    for (const gd of cell.node.querySelectorAll('.js-plotly-plot')) {
      const box = (gd.querySelector('.main-svg') || gd).getBoundingClientRect();
      const titles = [...gd.querySelectorAll('text')].map(t => [t.getAttribute('class') || '',
                                                                t.textContent.trim()]);
      const cartesian = gd._fullLayout && gd._fullLayout._subplots
        ? (gd._fullLayout._subplots.cartesian || []).length : 0;
      plots.push({
        width: box.width, height: box.height,
        traces: Array.isArray(gd.data) ? gd.data.length : 0,
        title: titles.filter(([c]) => c === 'gtitle').map(([, t]) => t).join(' '),
        xTitles: titles.filter(([c]) => /^x\\d*title$/.test(c)).map(([, t]) => t).filter(Boolean),
        yTitles: titles.filter(([c]) => /^y\\d*title$/.test(c)).map(([, t]) => t).filter(Boolean),
        cartesian,
      });
    }
    const sliders = [...cell.node.querySelectorAll('.widget-slider')].map(s => ({
      label: ((s.querySelector('.widget-label') || {}).textContent || '').trim(),
      readout: ((s.querySelector('.widget-readout') || {}).textContent || '').trim(),
      disabled: s.classList.contains('mod-disabled') || !!s.querySelector('[disabled]'),
    }));
    result.push({index, outputs, plots, sliders});
  });
  return result;
}"""
)

# A signature of each plotly figure's data in the notebook, in page order (typed arrays included).
FIGURE_SIGNATURES = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  const plain = (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v);
  return [...panel.content.node.querySelectorAll('.js-plotly-plot')].map(gd => {
    try { return JSON.stringify(gd.data || null, plain); } catch (e) { return 'unreadable: ' + e; }
  });
}"""
)

LAYOUT_SIGNATURES = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  return [...panel.content.node.querySelectorAll('.js-plotly-plot')].map(gd => {
    const l = gd.layout || {};
    try { return JSON.stringify({title: l.title, shapes: l.shapes, annotations: l.annotations,
                                 xaxis: l.xaxis, yaxis: l.yaxis}); }
    catch (e) { return 'unreadable'; }
  });
}"""
)

# The data points of each figure, in page order, as strings "trace:[x,y]", keeping only points
# whose value (y; x for horizontal bars; pie values) is a non-zero number. A figure "shows new
# data" when a point appears that was not there before: a time axis extended with zeros does not.
POINTS = """
function figurePoints(gd) {
  const list = v => (v == null ? null : ArrayBuffer.isView(v) ? Array.from(v)
                     : Array.isArray(v) ? v : null);
  const points = [];
  const traces = gd._fullData && gd._fullData.length ? gd._fullData : (gd.data || []);
  traces.forEach((t, ti) => {
    const xs = list(t.x), ys = list(t.y), vs = list(t.values);
    const horizontal = t.orientation === 'h';
    const n = Math.max(xs ? xs.length : 0, ys ? ys.length : 0, vs ? vs.length : 0);
    for (let i = 0; i < n; i++) {
      const x = xs ? xs[i] : i, y = ys ? ys[i] : null;
      const value = vs ? vs[i] : (horizontal ? x : y);
      if (typeof value === 'number' && value !== 0 && !Number.isNaN(value)) {
        points.push(ti + ':' + JSON.stringify([x, y, vs ? vs[i] : null]));
      }
    }
  });
  return points;
}
"""

FIGURE_POINTS = (
    "(path) => {"
    + FIND_PANEL
    + POINTS
    + """
  const panel = findPanel(path);
  return [...panel.content.node.querySelectorAll('.js-plotly-plot')].map(figurePoints);
}"""
)

# Truthy (the figures' indices) once some figure shows a data point it did not show in `before`.
FIGURES_CHANGED = (
    "([path, before]) => {"
    + FIND_PANEL
    + POINTS
    + """
  const panel = findPanel(path);
  const now = [...panel.content.node.querySelectorAll('.js-plotly-plot')].map(figurePoints);
  const changed = [];
  now.forEach((points, i) => {
    if (i >= before.length) return;
    const old = new Set(before[i]);
    if (points.some(p => !old.has(p))) changed.push(i);
  });
  return changed.length ? changed : false;
}"""
)

# Truthy once every widget view and every plotly figure the outputs call for is on the page.
RENDER_SETTLED = (
    "(path) => { const cells = ("
    + RENDERED
    + """)(path);
  if (!cells) return false;
  const outs = cells.flatMap(c => c.outputs);
  const expected = outs.reduce((n, o) => n + o.figures, 0);
  const shown = cells.reduce((n, c) => n + c.plots.length, 0);
  return shown >= expected
    && outs.every(o => (!o.widget || o.widgetRendered) && (!o.plotly || o.plotlyRendered));
}"""
)

# Start recording, with timestamps, every message the notebook's kernel sends on iopub (status,
# comm updates, outputs) and every status change, to show what the kernel did after an action.
RECORD_KERNEL = (
    "(path) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  const ctx = panel.sessionContext;
  if (window.__labcacheKernel && window.__labcacheKernel.path === path) return true;
  const log = {path, messages: [], statuses: []};
  window.__labcacheKernel = log;
  ctx.iopubMessage.connect((_, msg) => {
    const content = msg.content || {};
    const parent = msg.parent_header || {};
    log.messages.push([Date.now() / 1000, msg.header.msg_type, content.execution_state || '',
                       parent.msg_type || '', (content.data && content.data.method) || '']);
    if (log.messages.length > 5000) log.messages.splice(0, 1000);
  });
  ctx.statusChanged.connect((_, s) => log.statuses.push([Date.now() / 1000, s]));
  return true;
}"""
)

# The kernel's status, its id, and what RECORD_KERNEL saw since `since` (seconds since the epoch).
KERNEL_ACTIVITY = (
    "([path, since]) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  const ctx = panel.sessionContext;
  const kernel = ctx.session ? ctx.session.kernel : null;
  const log = window.__labcacheKernel || {messages: [], statuses: []};
  const messages = log.messages.filter(m => m[0] >= since);
  return {now: Date.now() / 1000, status: kernel ? kernel.status : 'no-kernel',
          id: kernel ? kernel.id : null, messages,
          lastMessage: messages.length ? messages[messages.length - 1][0] : null};
}"""
)

# How long a code cell's last run took, from the timing JupyterLab records in its metadata.
CELL_SECONDS = (
    "([path, index]) => {"
    + FIND_PANEL
    + """
  const panel = findPanel(path);
  const cell = panel ? panel.content.model.cells.get(index) : null;
  const e = cell && cell.getMetadata ? cell.getMetadata('execution') : null;
  if (!e) return null;
  const began = Date.parse(e['iopub.status.busy']);
  const ended = Date.parse(e['shell.execute_reply'] || e['iopub.status.idle']);
  return Number.isFinite(began) && Number.isFinite(ended) && ended >= began
    ? (ended - began) / 1000 : null;
}"""
)
