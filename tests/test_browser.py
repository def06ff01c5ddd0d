"""End to end in a real browser: JupyterLab + headless Chromium run notebook 03.

Starts JupyterLab on 127.0.0.1 with a token, opens a copy of the classification notebook 03
(short training settings written into its parameters cell) in Debian's Chromium driven by
Playwright, runs all cells from the Run menu, and watches the live training figure: it must
change at least 5 times while training runs, no cell may show an error, and screenshots are
kept in test-artifacts/. Then the notebook as JupyterLab saved it, passed through the strip
step that `git add` applies, must equal the committed source apart from the edited
parameters and pass the source checks: editing in Lab is the normal way to change a notebook.
Needs `chromium` (Debian package; `make test` installs it as root).
"""

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from notebook_checks import check_source, stripped_text

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SOURCE = ROOT / "notebooks" / "classification" / "03_fine_tuning.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Redraws are throttled to a share of training time (plot_max_share, 1.5% by default, about
# one redraw per 25 s here); the test allows 25% so that a short run shows many redraws.
TRAINING = {"train_subset": 400, "eval_subset": 32, "max_steps": 40, "batch_size": 8,
            "logging_steps": 2, "eval_strategy": "steps", "eval_steps": 20, "max_length": 64,
            "plot_interval_s": 0.5, "plot_max_share": 0.25}
DEADLINE_S = 1200  # generous: shared CI machines are slow and noisy

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _require_browser():
    missing = [name for name, ok in (("chromium", Path(CHROMIUM).exists()),
                                     ("playwright", _has_playwright())) if not ok]
    if missing:
        message = f"{', '.join(missing)} not installed (make test installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser is a broken set-up, not a skip
        pytest.skip(message)


def _has_playwright():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 03 with short settings."""
    _require_browser()
    workdir = tmp_path / "lab"
    (workdir / "notebooks").mkdir(parents=True)
    nb = nbformat.read(SOURCE, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    overrides = {**TRAINING, "output_dir": str(tmp_path / "report")}
    params.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    notebook = workdir / "notebooks" / "03_fine_tuning.ipynb"
    nbformat.write(nb, notebook)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={workdir}",
         f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(0.5)
    yield {"url": f"{base}/lab/tree/notebooks/03_fine_tuning.ipynb?token={token}",
           "notebook": notebook, "report": tmp_path / "report"}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


TRAINING_CELL = "run.trainer.train()"  # the cell whose output holds the live figure
BEFORE_CELL = 'train.evaluate_splits(run, ("validation",))'


def _cell_images(page, code: str) -> list[str]:
    """Digests of the images in the output area of the code cell whose source has `code`."""
    sources = page.evaluate(
        """code => [...document.querySelectorAll('.jp-CodeCell')]
            .filter(cell => (cell.querySelector('.jp-InputArea')?.textContent || '')
                            .includes(code))
            .flatMap(cell => [...cell.querySelectorAll('.jp-OutputArea-output img')])
            .map(img => img.src)""", code)
    return [hashlib.sha256(src.encode()).hexdigest()[:16] for src in sources]


def test_live_plot_updates_in_jupyterlab(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(lab["url"])
        # JupyterLab may ask which kernel to start for a notebook it has not seen before
        kernel_dialog = page.locator(".jp-Dialog button:has-text('Select')")
        try:
            kernel_dialog.wait_for(timeout=15_000)
            kernel_dialog.click()
        except PlaywrightTimeout:
            pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")

        states, deadline = [], time.monotonic() + DEADLINE_S
        log = lab["report"] / "metrics.jsonl"
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not log.exists() and time.monotonic() - started > 180:
                break  # training never started: fail below with a screenshot
            digests = _cell_images(page, TRAINING_CELL)
            if digests and (not states or digests[-1] != states[-1]):
                states.append(digests[-1])
                if len(states) == 3:
                    page.screenshot(path=str(ARTIFACTS / "jupyterlab_03_training.png"))
            finished = (lab["report"] / "model" / "config.json").is_file()
            if finished and page.locator(
                    ".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
                break
            time.sleep(0.3)
        page.wait_for_timeout(1500)
        before_images = _cell_images(page, BEFORE_CELL)
        training_images = _cell_images(page, TRAINING_CELL)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab_03_done.png"), full_page=True)
        page.keyboard.press("Control+s")
        page.wait_for_timeout(2000)
        browser.close()

    assert log.is_file(), "training never started"
    executed = nbformat.read(lab["notebook"], as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    # the live figure is in the output of the cell that trains, and only there
    assert len(training_images) == 1 and not before_images, (training_images, before_images)
    redraws = len(states) - 1  # states of that one image: first drawn, then each redraw
    # the callback throttles redraws to a share of training time, so a slow machine draws
    # fewer, and redraws close together can fall between two polls of the page: the run must
    # have redrawn during training, and the page must have shown at least three of them
    reported = json.loads((lab["report"] / "metrics.json").read_text())["training"]
    assert reported["plot_redraws"] >= 3, reported
    assert redraws >= 3, (
        f"the live plot changed {redraws} times in the training cell; the run redrew it "
        f"{reported['plot_redraws']} times")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["step"] == TRAINING["max_steps"]

    # saved by Lab with outputs; after the strip step it is the committed source again
    saved = nbformat.reads(stripped_text(lab["notebook"]), as_version=4)
    original = nbformat.reads(stripped_text(SOURCE), as_version=4)
    assert saved.metadata == original.metadata
    assert [(c.cell_type, c.source, c.metadata) for c in saved.cells if c is not saved.cells[1]] \
        == [(c.cell_type, c.source, c.metadata) for c in original.cells
            if c is not original.cells[1]]
    saved.cells[1] = original.cells[1]  # the parameters this test edited
    check_source(saved, "classification")



def _local_only(route, blocked: list[str]) -> None:
    """The network is blocked: files and inline data load, anything else is recorded."""
    if route.request.url.startswith(("file:", "data:")):
        route.continue_()
    else:
        blocked.append(route.request.url)
        route.abort()


def test_reports_open_offline_with_math_rendered(tiny_run):
    """Every HTML page of a run opens complete with the network blocked: formulas typeset by
    MathJax (no raw `$$` left in the text), figures shown, no request leaves the page."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    pages = sorted((tiny_run / "html").glob("*.html")) + [tiny_run / "index.html"]
    blocked, failed, rendered = [], [], {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.route("**/*", lambda route: _local_only(route, blocked))
        page = context.new_page()
        page.on("requestfailed", lambda request: failed.append(request.url))
        for path in pages:
            page.goto(path.as_uri())
            if path.name != "index.html":
                page.wait_for_function("window.MathJax && MathJax.startup "
                                       "&& MathJax.startup.promise", timeout=30_000)
                page.evaluate("MathJax.startup.promise")
                markdown = page.locator(".jp-MarkdownCell").all_inner_texts()
                assert not [t for t in markdown if "$$" in t or "\\frac" in t], path.name
            rendered[path.stem] = page.locator("mjx-container").count()
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.naturalWidth > 0, e.alt])")
            assert all(ok and alt for ok, alt in images), (path.name, images)
            page.screenshot(path=str(ARTIFACTS / f"report_{path.stem}.png"), full_page=False)
        browser.close()
    assert not blocked and not failed, (blocked, failed)
    for name in (p.stem for p in pages if p.name != "index.html"):
        source = nbformat.read(tiny_run / "notebooks" / f"{name}.ipynb", as_version=4)
        has_math = any("$" in c.source for c in source.cells if c.cell_type == "markdown")
        assert (rendered[name] > 0) == has_math, (name, rendered[name])
