"""The dashboard (``sim/mesa_model/app.py``) in a real browser: ``solara run`` serves it on a free
localhost port, Playwright drives headless Chromium (Debian's ``/usr/bin/chromium``; no browser
download), and the test presses Step, moves the demand slider, presses Reset and Step again. It
checks what a person would see: the simulated time and the charged fraction the page prints, and
the pixels of the drawn network and of the plots, which must change with every Step; and that the
slider reached the model (more demand drains the charge faster). A screenshot of the page is
saved under the test's tmp_path.

Skips only where Chromium is not installed (``make test`` installs Debian's package with apt-get
where it can; see the Makefile's ``chromium`` step).
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _support import ROOT, child_env

CHROMIUM = Path(os.environ.get("CURRENCY_SIM_CHROMIUM", "/usr/bin/chromium"))
START_S = 120  # server start: imports, the first model's build and its observation's compile
READY_S = 90  # page ready: solara's kernel, the first render
STEP_S = 120  # one Step: the first one compiles the jitted scan (seconds; tens on a busy machine)
# the front-end bundle solara's page loads first (from its CDN cache; the Makefile's solara-assets step)
BUNDLE = "/_solara/cdn/@widgetti/solara-vuetify-app@10.1.1/dist/solara-vuetify-app8.min.js"
CHANGED = 0.002  # share of a figure's pixels that must change to count as redrawn with new numbers
SUMMARY = re.compile(r"t = (?P<t>[0-9.e+-]+) .*?mean (?P<label>.+?) (?P<charge>[0-9.]+) · specialization index")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: Debian's chromium package could not be installed here "
                    "(make test runs `apt-get install chromium` where apt-get runs as root)")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    """``solara run sim.mesa_model.app`` on a free port; stopped (its process group) at teardown."""
    port = _free_port()
    log = tmp_path_factory.mktemp("solara") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "solara", "run", "sim.mesa_model.app", "--host", "127.0.0.1", "--port", str(port),
             "--production", "--no-open", "--log-level", "warning"],
            cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"solara exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _get(url + "/", timeout=2) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"solara did not answer within {START_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        # the page is blank without its front-end bundle: name the missing step rather than time out later
        if _get(url + BUNDLE, timeout=60) != 200:
            pytest.fail(f"solara cannot serve {BUNDLE} (its CDN cache is empty and the CDN unreachable): "
                        "run `make solara-assets` (npm pack into .venv/share/solara/cdn)")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def _summary(page) -> dict:
    text = page.get_by_text("engine steps of dt").first.inner_text()
    m = SUMMARY.search(text)
    assert m, text
    return {"t": float(m["t"]), "charge": float(m["charge"]), "label": m["label"], "text": text}


def _pixels(page, i: int) -> np.ndarray:
    """The i-th figure of the page (0 network, 1 charge and specialization, 2 pools, 3 ledgers) as
    RGB pixels, without its title (the title prints the time, which would make any two differ)."""
    from playwright.sync_api import Error

    for attempt in range(20):
        try:
            png = page.locator("img").nth(i).screenshot(timeout=10_000)
            break
        except Error:  # solara swapped the image element for a new one mid-shot (a re-render): take it again
            if attempt == 19:
                raise
            page.wait_for_timeout(250)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float)
    return img[int(0.15 * img.shape[0]):]


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose colour moved by more than a few levels (same-size images)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.mean(np.abs(a - b).max(axis=-1) > 8))


def _wait_summary(page, want_t: float, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        s = _summary(page)
        if abs(s["t"] - want_t) < 1e-9:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"the page still shows t = {s['t']} after {timeout_s} s (waiting for t = {want_t})")
        page.wait_for_timeout(200)


def _figures(page) -> list[np.ndarray]:
    return [_pixels(page, i) for i in range(4)]


def _figures_after(page, previous: list[np.ndarray], which: tuple[int, ...],
                   timeout_s: float = 30) -> list[np.ndarray]:
    """The figures once those in ``which`` differ from ``previous`` (the images arrive after the
    text), or as they are at the timeout (the caller's assertion then says which did not change)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = _figures(page)
        if all(_changed(previous[i], now[i]) > CHANGED for i in which) or time.monotonic() > deadline:
            return now
        page.wait_for_timeout(300)


# ---------------------------------------------------------------------------- the model, no browser
def test_knobs_reach_each_substrate_config():
    from sim.mesa_model.app import dashboard_config

    bio = dashboard_config("bio", "grid", 12, demand_scale=2.0, supply_scale=0.5, conductance_scale=3.0, alpha=1.5,
                           differentiation="imitation")
    assert bio["substrate"]["name"] == "bio" and bio["topology"]["n_cells"] == 12
    assert bio["topology"]["rows"] == 3  # 12 cells: 3 x 4 (the default floor(sqrt(12)) = 3 divides too)
    assert bio["params"]["demand_scale"] == 2.0 and bio["params"]["supply_scale"] == 0.5
    assert bio["params"]["conductance_scale"] == 3.0
    assert bio["differentiation"]["rule"] == "imitation" and bio["differentiation"]["alpha"] == 1.5
    assert dashboard_config("generic", "grid", 28)["topology"]["rows"] == 4  # floor(sqrt(28)) = 5 does not divide

    preset = dashboard_config("llm", "ring", 4)
    llm = dashboard_config("llm", "ring", 4, demand_scale=2.0, supply_scale=0.5, conductance_scale=0.0)
    assert llm["substrate"]["arrivals"]["rate_per_s"] == 2.0 * preset["substrate"]["arrivals"]["rate_per_s"]
    assert llm["gpu"]["peak_tflops"] == 0.5 * preset["gpu"]["peak_tflops"]
    assert llm["gpu"]["bandwidth_tb_s"] == 0.5 * preset["gpu"]["bandwidth_tb_s"]
    assert preset["substrate"]["routing"] is True and llm["substrate"]["routing"] is False


def test_stiff_corner_runs_with_a_smaller_step():
    """Fast supply, a convex trade-off and strong junctions: the substrate refuses dt = 0.02 as
    unstable; the dashboard halves dt until it is accepted and says so."""
    from sim.mesa_model.app import dashboard_config, fit_dt

    cfg = dashboard_config("generic_tissue", "ring", 8, 4.0, 4.0, 4.0, 4.0)
    fitted, sub, built, note = fit_dt(cfg)
    assert fitted["dt"] < cfg["dt"] and "dt lowered" in note
    assert float(built.params.dt) == fitted["dt"]
    kept = fit_dt(dashboard_config("generic_tissue", "ring", 8))
    assert kept[0]["dt"] == cfg["dt"] and kept[3] == ""


def test_refused_choice_is_shown_not_raised():
    from sim.mesa_model.app import DashboardModel

    model = DashboardModel(substrate="no_such_substrate")
    assert "no_such_substrate" in model.error and not model.running
    model.step()  # does nothing
    assert model.time_simulated == 0.0 and len(model.agents) == 0


# ---------------------------------------------------------------------------- the page, in Chromium
def test_dashboard_in_a_browser(server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(READY_S * 1000)
            page.goto(server, timeout=READY_S * 1000)
            page.get_by_text("engine steps of dt").first.wait_for(state="visible")
            assert page.locator("img").count() == 4  # network, charge/specialization, pools, ledgers
            start = _wait_summary(page, 0.0, 10)
            assert start["label"] == "charged fraction A/(A+D)"  # the default: generic_tissue
            before = _figures(page)

            # Step: one frame of 50 engine steps (dt 0.02): t = 1
            page.get_by_role("button", name="Step").click()
            first = _wait_summary(page, 1.0, STEP_S)
            after = _figures_after(page, before, (0, 1, 2, 3))
            assert first["charge"] != start["charge"]
            for i, what in enumerate(("network", "charge plot", "pools plot", "ledgers plot")):
                assert _changed(before[i], after[i]) > CHANGED, f"the {what} did not change with Step"

            # the demand slider x1 -> x2 (4 keyboard steps of 0.25), then Reset rebuilds the model with it
            slider = page.get_by_role("slider", name="demand x")
            slider.focus()
            for _ in range(4):
                slider.press("ArrowRight")
            page.wait_for_function("() => document.querySelector('[role=slider][aria-label=\"demand x\"]')"
                                   ".getAttribute('aria-valuenow') === '2'", timeout=10_000)
            page.get_by_role("button", name="Reset").click()
            page.get_by_text("demand_scale 2").first.wait_for(state="visible", timeout=STEP_S * 1000)
            reset = _wait_summary(page, 0.0, 30)
            assert reset["charge"] == start["charge"]  # the same initial state

            page.get_by_role("button", name="Step").click()
            doubled = _wait_summary(page, 1.0, STEP_S)
            # twice the consumers' capacity drains the charged pool faster than the default run did
            assert doubled["charge"] < first["charge"] - 1e-3, (doubled, first)
            shown = _figures_after(page, after, (0,))
            assert _changed(after[0], shown[0]) > CHANGED, "the network looks the same at double demand"

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            print(f"screenshot: {shot}")
        finally:
            browser.close()
