"""The dashboard in a real browser: headless Chromium (over the DevTools protocol) against a
live run folder served by the real service on 127.0.0.1. Charts draw (pixels on their
canvases), the sample browser shows single-turn and multi-turn samples, the page follows the
run as it writes, the control buttons reach the run with the token (and not with a wrong
one), and the page fits a phone-sized viewport. Screenshots go to tests/output/ (or
$RLVR_TEST_ARTIFACTS) for people to look at."""

from __future__ import annotations

import json
import os

import pytest

from rlvr.run.samples import write_samples
from rlvr.run.status import RunStatus
from rlvr.service.server import start_in_thread
from tests.helpers.browser import Browser, chromium_binary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.environ.get("RLVR_TEST_ARTIFACTS", os.path.join(REPO, "tests", "output"))
TOKEN = "browser-test-token"
CHROMIUM = chromium_binary()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`make setup` installs the "
                                                          "Debian package as root: apt-get install chromium)")

SINGLE = {"prompt": "What is 2+3?", "completion": "<answer>5</answer>", "answer": "5", "reward": 1.0,
          "scores": {"math": 1.0}, "failures": {}, "advantage": 0.5, "length": 7, "finish_reason": "stop"}
EPISODE = {"prompt": "What is 17*23?", "completion": "", "answer": "391", "reward": 1.0, "scores": {"math": 1.0},
           "failures": {}, "advantage": 0.7, "length": 31, "finish_reason": "stop", "turns": 2, "tool_calls": 1,
           "messages": [{"role": "user", "content": "What is 17*23?"},
                        {"role": "assistant", "content": "",
                         "tool_calls": [{"function": {"name": "calc", "arguments": "{\"expr\": \"17*23\"}"}}]},
                        {"role": "tool", "name": "calc", "content": "391"},
                        {"role": "assistant", "content": "<answer>391</answer>"}]}

# pixels drawn on each chart canvas (not blank): the charts really rendered
PAINTED = """[...document.querySelectorAll('#charts canvas')].map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })"""


def _metrics_row(step: int) -> dict:
    return {"step": step, "reward/mean": 0.1 + 0.05 * step, "loss": -0.01 * step, "kl": 0.001 * step,
            "response_length/mean": 20.0 + step, "timing/generate": 1.0, "timing/train": 0.5, "timing/step": 1.6,
            **({"eval/accuracy": 0.2 + 0.04 * step} if step % 4 == 0 else {})}


@pytest.fixture
def live_run(tmp_path):
    run_dir = tmp_path / "runs" / "live"
    status = RunStatus(str(run_dir), "live", total_steps=20, heartbeat_s=0.5)
    status.start_heartbeat()
    status.update(state="running", step=12, phase="generate", weight_version=12,
                  last_step_timings={"timing/generate": 1.0, "timing/train": 0.5, "timing/step": 1.6})
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(_metrics_row(s)) + "\n" for s in range(0, 13))
    write_samples(str(run_dir), 12, [dict(SINGLE, step=12), dict(EPISODE, step=12)])
    server = start_in_thread(str(tmp_path / "runs"), "127.0.0.1", 0, TOKEN)
    yield status, run_dir, server
    server.stop()
    status.close("completed")


@pytest.fixture
def browser():
    b = Browser(CHROMIUM)
    yield b
    b.close()


def test_dashboard_draws_charts_samples_and_controls_a_live_run(live_run, browser):
    status, run_dir, server = live_run
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.open(f"{server.url}/#token={TOKEN}&run=live")
    browser.wait_for("document.querySelectorAll('#charts canvas').length >= 3", "the charts")
    assert browser.evaluate("location.hash") == "#run=live"  # the token left the address bar
    painted = browser.wait_for(f"(() => {{ const p = {PAINTED}; return p.every((n) => n > 200) && p; }})()",
                               "pixels on every chart")
    assert len(painted) >= 3
    browser.wait_for("document.querySelectorAll('#samples tbody tr').length == 2", "the step's two samples")
    episode = browser.evaluate("document.querySelector('#samples td.episode').innerText")
    assert '-> calc({"expr": "17*23"})' in episode and "391" in episode and "2 turns" in episode
    assert browser.evaluate("document.getElementById('run-state').textContent") == "running"

    status.update(step=13, phase="train")  # the run goes on: the page follows it
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(_metrics_row(13)) + "\n")
    browser.wait_for("document.getElementById('run-list').innerText.includes('step 13/20')", "the next step", 20)
    browser.screenshot(os.path.join(ARTIFACTS, "dashboard.png"), 1280, 1600)

    browser.evaluate("window.confirm = () => true; undefined")  # the stop button asks first
    for action in ("pause", "stop"):
        browser.evaluate(f"document.querySelector('button[data-action={action}]').click()")
        browser.wait_for(f"document.getElementById('control-result').textContent.startsWith('{action}: HTTP 202')",
                         f"{action} accepted")
    requests = sorted(os.listdir(run_dir / "control"))
    assert [name.split("-", 1)[1] for name in requests] == ["pause.json", "stop.json"]

    browser.evaluate("sessionStorage.setItem('rlvr-token', 'wrong'); undefined")
    browser.evaluate("document.querySelector('button[data-action=checkpoint]').click()")
    browser.wait_for("document.getElementById('control-result').textContent.startsWith('checkpoint: HTTP 401')",
                     "a wrong token refused")
    assert len(os.listdir(run_dir / "control")) == 2


def test_dashboard_fits_a_phone(live_run, browser):
    _, _, server = live_run
    os.makedirs(ARTIFACTS, exist_ok=True)
    browser.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=1, mobile=True)
    browser.open(f"{server.url}/#run=live")
    browser.wait_for("document.querySelectorAll('#charts canvas').length >= 3", "the charts")
    browser.wait_for(f"{PAINTED}.every((n) => n > 200)", "pixels on every chart")
    # nothing wider than the screen: no sideways scrolling of the page (wide tables scroll inside their box)
    assert browser.evaluate("document.documentElement.scrollWidth") <= 390
    width = browser.evaluate("document.querySelector('#charts canvas').getBoundingClientRect().width")
    assert 250 <= width <= 390
    browser.screenshot(os.path.join(ARTIFACTS, "dashboard-phone.png"), 390, 844, mobile=True)
