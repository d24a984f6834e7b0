"""JupyterLab in a real browser: what ``make lab-notebooks`` starts, opened in headless Chromium.

Starts ``python -m runbooks_lib.notebook_server`` (the make target's command) on a free loopback
port, opens notebooks/30-diagnostics.ipynb with Debian's chromium driven by selenium through
Debian's chromedriver (never Selenium Manager: nothing is downloaded), and checks that the
notebook renders with its title and its parameters cell, that its kernel starts, and that no
error dialog or error notification shows (and that a missing notebook does bring up the
error dialog the check looks for). The screenshot is kept in
test-artifacts/browser/ (ignored by git). Chromium resolves no name and JupyterLab fetches no
news: the only traffic is to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbooks_lib import local, notebook_server
from tests.local.conftest import free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.local, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "30-diagnostics.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Marks every process this test starts (JupyterLab, its kernels, chromedriver, chromium) so the
# test can prove none outlives it.
MARKER = "RUNBOOKS_BROWSER_TEST"

# The page's state in one round trip: headings, the parameters cell, dialogs, error toasts, kernel status.
STATE_JS = """
const [title, paramLine] = arguments;
const panel = document.querySelector('.jp-NotebookPanel');
if (!panel) return {panel: false};
const headings = [...panel.querySelectorAll('.jp-RenderedMarkdown h1')].map(h => h.textContent.replace('¶', '').trim());
const cell = [...panel.querySelectorAll('.jp-CodeCell')].find(c => c.textContent.includes(paramLine));
const status = document.querySelector('#jp-main-statusbar');
const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel');
return {
  tab: tab ? tab.textContent : '',
  panel: true,
  title: headings.includes(title),
  headings: headings.slice(0, 5),
  parameters: Boolean(cell),
  parametersVisible: cell ? cell.getBoundingClientRect().bottom <= window.innerHeight : false,
  dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.slice(0, 300)),
  errors: [...document.querySelectorAll('.Toastify__toast--error')].map(t => t.innerText.slice(0, 300)),
  status: status ? status.innerText.replace(/\\s+/g, ' ') : '',
};
"""


@dataclass(frozen=True)
class Server:
    port: int
    token: str
    process: local.Background

    def url(self, notebook: str = "") -> str:
        return notebook_server.url(self.port, self.token, notebook)


def expected_texts(path: Path) -> tuple[str, str]:
    """The notebook's title (its first markdown heading) and the first line of its parameters cell."""
    nb = json.loads(path.read_text())
    title = next(line.lstrip("#").strip() for cell in nb["cells"] if cell["cell_type"] == "markdown"
                 for line in "".join(cell["source"]).splitlines() if line.startswith("# "))
    parameters = next(cell for cell in nb["cells"] if "parameters" in cell["metadata"].get("tags", []))
    return title, "".join(parameters["source"]).splitlines()[0]


def marked_processes(marker_value: str) -> list[str]:
    """``pid command`` of every process whose environment carries the marker."""
    found = []
    needle = f"{MARKER}={marker_value}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name} {cmdline[:120]}")
        except OSError:
            continue  # gone, or not ours to read
    return found


def api_ready(server: Server) -> tuple[bool, str]:
    if not server.process.running:
        raise AssertionError(f"JupyterLab exited ({server.process.poll()}):\n{server.process.log_tail(30)}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/status?token={server.token}",
                                    timeout=2) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as exc:
        return False, str(exc)


@pytest.fixture
def marker() -> str:
    return secrets.token_hex(8)


@pytest.fixture
def jupyterlab(tmp_path: Path, marker: str) -> Iterator[Server]:
    """JupyterLab as ``make lab-notebooks`` starts it, with its user state in tmp_path; its group killed after."""
    port = free_port()
    token = secrets.token_urlsafe(16)
    # JupyterLab's question about its news would cover part of the screenshot: answered "no" beforehand.
    news = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}\n')
    env = {"JUPYTER_TOKEN": token, MARKER: marker,
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    process = local.start([sys.executable, "-m", "runbooks_lib.notebook_server", "--port", str(port)],
                          log_path=tmp_path / "jupyterlab.log", cwd=ROOT, env=env)
    server = Server(port, token, process)
    try:
        wait_until(lambda: api_ready(server), 45, f"JupyterLab answering on 127.0.0.1:{port}", 0.3)
        yield server
    finally:
        process.stop()
        print(f"JupyterLab log: {tmp_path / 'jupyterlab.log'}")


def test_diagnostics_notebook_renders_in_chromium(jupyterlab: Server, tmp_path: Path, marker: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for program, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert program.is_file(), f"{program} is missing: make apt installs Debian's {package}"
    title, param_line = expected_texts(ROOT / "notebooks" / NOTEBOOK)

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions", "--no-pings",
                # Every host name fails to resolve: the page can only reach the loopback address it was given.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"),
                      env={**os.environ, MARKER: marker})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"{Path(NOTEBOOK).stem}.png"
    screenshot.unlink(missing_ok=True)
    driver = webdriver.Chrome(service=service, options=options)
    state: dict = {}
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        driver.get(jupyterlab.url(NOTEBOOK))

        def rendered() -> tuple[bool, str]:
            nonlocal state
            state = driver.execute_script(STATE_JS, title, param_line) or {}
            if state.get("dialogs") or state.get("errors"):
                return True, "an error dialog or notification shows"  # stop waiting; asserted below
            pending = [what for what, ok in (
                ("the notebook panel", state.get("panel")), (f"the title {title!r}", state.get("title")),
                (f"the parameters cell ({param_line!r})", state.get("parameters")),
                ("the kernel idle in the status bar", "Idle" in state.get("status", ""))) if not ok]
            return not pending, "; ".join(pending) + f" (page: {state})"

        try:
            wait_until(rendered, 45, f"{NOTEBOOK} rendered in JupyterLab", 0.5)
        finally:
            driver.save_screenshot(str(screenshot))
            print(f"screenshot: {screenshot}")
        assert not state["dialogs"], f"error dialog in JupyterLab: {state['dialogs']} (screenshot {screenshot})"
        assert not state["errors"], f"error notification in JupyterLab: {state['errors']} (screenshot {screenshot})"
        assert state["parametersVisible"], f"parameters cell below the screenshot's fold: {state}"
        assert state["tab"] == NOTEBOOK, f"the current tab is {state['tab']!r}, not {NOTEBOOK}"

        # The dialog check can fail: a notebook that does not exist brings JupyterLab's error dialog up.
        driver.get(jupyterlab.url("no-such-runbook.ipynb"))
        wait_until(lambda: bool((driver.execute_script(STATE_JS, title, param_line) or {}).get("dialogs")), 30,
                   "JupyterLab's error dialog for a missing notebook", 0.5)
    finally:
        driver.quit()
        jupyterlab.process.stop()
    assert screenshot.stat().st_size > 10_000, f"screenshot {screenshot} is nearly empty"
    wait_until(lambda: (not (left := marked_processes(marker)), f"still running: {left}"), 15,
               "JupyterLab, its kernel, chromedriver and chromium to be gone")
