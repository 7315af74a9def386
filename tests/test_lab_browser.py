"""The lab notebook in a real browser: JupyterLab, headless on a free loopback port with a token,
driven by Playwright in the system's Chromium (the OS package; no browser download). It runs
every cell, checks that the sliders and the Train button render, trains a 2-step run from the
button and waits for the run's row in the comparison table, then saves a screenshot
(``lab.png`` in the test's tmp folder). JupyterLab and the browser are stopped even on failure.

``python tests/test_lab_browser.py --out outputs --screenshot figures/lab.png`` drives the same
steps against a real OUT (the README's screenshot; ``--steps 250`` for a default run).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "07_lab.ipynb"


def find_chromium() -> str | None:
    """$FIFFDEPTH_CHROMIUM, else the OS package's browser on PATH."""
    if os.environ.get("FIFFDEPTH_CHROMIUM"):
        return os.environ["FIFFDEPTH_CHROMIUM"] if Path(os.environ["FIFFDEPTH_CHROMIUM"]).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """Linux: the server gets SIGTERM if this process dies without its finally (and takes its
    kernels down with it); the browser goes with Playwright's driver the same way."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_lab_notebook(directory: Path, parameters: dict) -> Path:
    """notebooks/07_lab.ipynb with ``parameters`` injected after its parameters cell, as papermill does."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), parameters)
    directory.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, directory / NOTEBOOK.name)
    return directory / NOTEBOOK.name


@contextmanager
def jupyter_lab(root: Path, workdir: Path):
    """JupyterLab serving ``root`` on 127.0.0.1 with a token, kernels started in the repository
    root (as ``make lab``); yields its base URL with the token. Shut down on exit, kernels included."""
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[var] = str(workdir / sub)  # nothing of the user's Jupyter setup, nothing left behind
    news = workdir / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the lab
    log = open(workdir / "jupyterlab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             f"--MappingKernelManager.root_dir={REPO}", "--LabApp.expose_app_in_browser=True",
                             "--ServerApp.allow_root=True"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{_tail(workdir / 'jupyterlab.log')}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > end:
                    raise RuntimeError(f"JupyterLab did not answer in 90 s:\n{_tail(workdir / 'jupyterlab.log')}")
                time.sleep(0.5)
        yield base, token
    finally:
        try:  # the server's own shutdown also shuts its kernels down
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=5)
            proc.wait(timeout=20)
        except Exception:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def run_lab_in_browser(base: str, token: str, chromium: str, screenshot: Path, steps: int = 2,
                       train_timeout: float = 600.0) -> dict:
    """Open the lab notebook, run all cells, check the controls, train a ``steps``-step run from the
    button, wait for its table row; screenshot the lab. Returns what it saw (rows before / after,
    seconds from the click to the new row)."""
    from playwright.sync_api import sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2300})
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_function("""() => {
                const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                const kernel = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
                return kernel && kernel.status === 'idle';
            }""", timeout=120_000)
            seen["kernel"] = page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            lab = page.locator(".fiffdepth-lab")
            lab.wait_for(timeout=180_000)
            train = lab.get_by_role("button", name="Train")
            train.wait_for(timeout=30_000)
            seen["sliders"] = lab.locator(".widget-slider").count()
            rows = lab.locator("table.fiffdepth-lab-table tbody tr")
            rows.first.wait_for(timeout=300_000)  # the baselines are scored in the widget's thread
            seen["rows_before"] = rows.count()
            steps_box = lab.locator(".widget-text").filter(has=page.locator("label", has_text="steps")).locator("input")
            steps_box.fill(str(steps))
            steps_box.press("Enter")
            steps_box.press("Tab")  # the box syncs to the kernel on change
            seen["message_before"] = lab.locator(".lab-message").all_inner_texts()
            t0 = time.time()
            train.click()
            page.wait_for_function(
                "n => document.querySelectorAll('.fiffdepth-lab table.fiffdepth-lab-table tbody tr').length > n",
                arg=seen["rows_before"], timeout=train_timeout * 1000)
            seen["seconds_to_row"] = round(time.time() - t0, 1)
            seen["rows_after"] = rows.count()
            seen["new_row"] = lab.locator("table.fiffdepth-lab-table tr.new").inner_text()
            lab.locator(".lab-message", has_text="Done").wait_for(timeout=120_000)
            seen["message"] = lab.locator(".lab-message").inner_text()
            lab.locator("img").last.wait_for(timeout=60_000)  # the d0 / d₋₁ maps of the new run
            page.wait_for_timeout(1500)
            lab.scroll_into_view_if_needed()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            lab.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return seen


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lab_notebook_trains_from_the_browser(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine: install the OS package (apt-get install chromium; "
                    ".ci/run does when it runs as root) or set FIFFDEPTH_CHROMIUM")
    pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    pytest.importorskip("jupyterlab", reason="jupyterlab (the dev extra) is not installed")
    from conftest import make_lab_outputs

    out = make_lab_outputs(tmp_path / "outputs")
    nb_dir = tmp_path / "notebooks"
    write_lab_notebook(nb_dir, {"out_dir": str(out), "n_show": 2})
    shot = tmp_path / "lab.png"
    with jupyter_lab(nb_dir, tmp_path) as (base, token):
        seen = run_lab_in_browser(base, token, chromium, shot, steps=2)
    print(json.dumps(seen, indent=1, ensure_ascii=False))
    assert seen["kernel"] == "python3" and seen["sliders"] >= 4
    assert seen["rows_before"] == 2  # the mean layout and the full method
    assert seen["rows_after"] == 3 and "2 steps" in seen["new_row"], seen
    assert "Done" in seen["message"], seen
    assert shot.stat().st_size > 20_000


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Screenshot the lab after a run (the README's figure).")
    ap.add_argument("--out", default="outputs", help="an OUT with the embedded data (00_data, 02)")
    ap.add_argument("--screenshot", default="figures/lab.png")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="fiffdepth-lab-"))
    write_lab_notebook(work / "notebooks", {"out_dir": str(Path(args.out).resolve())})
    with jupyter_lab(work / "notebooks", work) as (base, token):
        print(json.dumps(run_lab_in_browser(base, token, find_chromium(), Path(args.screenshot).resolve(),
                                            steps=args.steps, train_timeout=3600), indent=1, ensure_ascii=False))
