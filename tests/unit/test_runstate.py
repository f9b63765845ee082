"""The run-folder file contract (rlvr.run.status): status, staleness, control inbox, samples, metrics."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from rlvr.run.status import (READER_STATES, WRITTEN_STATES, RunNotFound, RunStatus, list_runs, read_status,
                             resolve_run)
from rlvr.run.control import ACTIONS, process_start_ns, ControlInbox, request_control
from rlvr.run.metrics import read_metrics
from rlvr.run.samples import read_samples, write_samples


def _edit_status(run_dir: str, **fields) -> None:
    path = os.path.join(run_dir, "status.json")
    with open(path) as f:
        status = json.load(f)
    status.update(fields)
    with open(path, "w") as f:
        json.dump(status, f)


def test_status_round_trip(tmp_path):
    run_dir = str(tmp_path / "r1")
    status = RunStatus(run_dir, "r1", total_steps=20, heartbeat_s=5.0, ray_job_id="raysubmit_1")
    s = read_status(run_dir)
    assert (s["state"], s["step"], s["total_steps"], s["ray_job_id"]) == ("pending", 0, 20, "raysubmit_1")
    assert s["pid"] == os.getpid() and s["heartbeat_s"] == 5.0 and s["started_at"] <= s["heartbeat"]

    status.update(state="running", step=3, phase="train", weight_version=3,
                  last_step_timings={"timing/generate": 1.5, "timing/step": 2.0},
                  latest_metrics={"reward/mean": 0.25, "loss": float("nan")},
                  reward_failures={"math/timeout": 2}, checkpoints=["checkpoints/step_000002"])
    s = read_status(run_dir)
    assert (s["state"], s["step"], s["phase"], s["weight_version"]) == ("running", 3, "train", 3)
    assert s["latest_metrics"] == {"reward/mean": 0.25, "loss": None}  # NaN is not JSON: stored as null
    assert s["reward_failures"] == {"math/timeout": 2} and s["last_step_timings"]["timing/step"] == 2.0
    assert s["checkpoints"] == []  # what is on disk, not what the file claims
    os.makedirs(os.path.join(run_dir, "checkpoints", "step_000002"))
    os.makedirs(os.path.join(run_dir, "checkpoints", "final.tmp-123"))  # in flight: not a checkpoint
    assert read_status(run_dir)["checkpoints"] == ["checkpoints/step_000002"]

    with pytest.raises(ValueError):
        status.update(state="runing")
    with pytest.raises(TypeError):  # refused before it is merged: later writes (and heartbeats) still work
        status.update(step=4, latest_metrics={"tensor": object()})
    status.update(phase="sync")
    assert (read_status(run_dir)["step"], read_status(run_dir)["latest_metrics"]["reward/mean"]) == (3, 0.25)
    with pytest.raises(ValueError):
        status.close("running")
    status.close("failed", error="boom")
    s = read_status(run_dir, now=time.time() + 3600)  # final states never go stale
    assert (s["state"], s["error"]) == ("failed", "boom") and s["finished_at"] >= s["started_at"]


def test_recipe_is_parsed(tmp_path):
    run_dir = str(tmp_path / "r")
    RunStatus(run_dir, "r", 5)
    with open(os.path.join(run_dir, "recipe.yaml"), "w") as f:
        f.write("trainer:\n  total_steps: 5\nrun:\n  name: r\n")
    assert read_status(run_dir)["recipe"] == {"trainer": {"total_steps": 5}, "run": {"name": "r"}}


def test_heartbeat_thread_refreshes_then_stops(tmp_path):
    run_dir = str(tmp_path / "r")
    status = RunStatus(run_dir, "r", 5, heartbeat_s=0.05)
    first = read_status(run_dir)["heartbeat"]
    status.start_heartbeat()
    time.sleep(0.4)
    assert read_status(run_dir)["heartbeat"] > first
    status.close("completed")
    final = read_status(run_dir)
    time.sleep(0.2)
    assert read_status(run_dir)["heartbeat"] == final["heartbeat"] and final["state"] == "completed"


def test_readers_never_see_a_partial_status_file(tmp_path):
    run_dir = str(tmp_path / "r")
    status = RunStatus(run_dir, "r", 5, heartbeat_s=0.001)
    status.start_heartbeat()
    errors, done = [], threading.Event()

    def read_loop():
        while not done.is_set():
            try:
                with open(os.path.join(run_dir, "status.json")) as f:
                    json.load(f)
            except ValueError as e:
                errors.append(e)

    reader = threading.Thread(target=read_loop)
    reader.start()
    big = {f"metric/{i}": i * 0.5 for i in range(300)}
    for step in range(150):
        status.update(state="running", step=step, latest_metrics=big)
    done.set()
    reader.join()
    status.close("completed")
    assert errors == [] and read_status(run_dir)["step"] == 149


def test_stale_when_heartbeat_is_old(tmp_path):
    run_dir = str(tmp_path / "r")
    status = RunStatus(run_dir, "r", 5, heartbeat_s=10.0)  # stale after max(30, 6 * 10) = 60 s
    status.update(state="running")
    beat = read_status(run_dir)["heartbeat"]
    assert read_status(run_dir, now=beat + 45)["state"] == "running"
    s = read_status(run_dir, now=beat + 61)
    assert (s["state"], s["reported_state"], s["stale_after"]) == ("stale", "running", 60.0)

    fast = str(tmp_path / "fast")
    RunStatus(fast, "fast", 5, heartbeat_s=1.0).update(state="paused")  # floor of 30 s
    beat = read_status(fast)["heartbeat"]
    assert read_status(fast, now=beat + 29)["state"] == "paused"
    assert read_status(fast, now=beat + 31)["state"] == "stale"


def test_stale_when_the_writer_process_is_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: this pid is gone
    run_dir = str(tmp_path / "r")
    RunStatus(run_dir, "r", 5).update(state="running")
    assert read_status(run_dir)["state"] == "running"
    _edit_status(run_dir, pid=proc.pid)
    assert read_status(run_dir)["state"] == "stale"
    _edit_status(run_dir, hostname="some-other-host")  # cannot check a pid elsewhere: trust the heartbeat
    assert read_status(run_dir)["state"] == "running"


def test_control_inbox_order_and_deletion(tmp_path):
    run_dir = str(tmp_path / "r")
    ids = [request_control(run_dir, a)["id"] for a in ("pause", "checkpoint", "resume")]
    assert len(set(ids)) == 3 and all(i.split("-")[1] in ACTIONS for i in ids)
    control = os.path.join(run_dir, "control")
    for junk in ("notes.txt", "123-explode.json", "abc-stop.json", ".1-stop.json.tmp-1-2"):
        open(os.path.join(control, junk), "w").close()
    inbox = ControlInbox(run_dir)
    assert inbox.take() == ["pause", "checkpoint", "resume"]
    assert sorted(os.listdir(control)) == sorted(["notes.txt", "123-explode.json", "abc-stop.json", ".1-stop.json.tmp-1-2"])
    assert inbox.take() == []
    # numeric order, not name order ("10-" sorts before "9-" as text)
    for name in ("10-pause.json", "9-stop.json"):
        with open(os.path.join(control, name), "w") as f:
            f.write("{}")
    assert inbox.take() == ["stop", "pause"]
    with pytest.raises(ValueError):
        request_control(run_dir, "explode")
    assert ControlInbox(str(tmp_path / "no-such-run")).take() == []


def test_requests_left_for_an_earlier_driver_are_dropped_not_obeyed(tmp_path, capsys):
    """A driver killed after a `stop` request was written (SIGTERM then SIGKILL) leaves it in
    the folder; the next driver of the same run must not stop at its first step because of it."""
    run_dir = str(tmp_path / "r")
    request_control(run_dir, "stop")
    inbox = ControlInbox(run_dir, since_ns=time.time_ns())
    request_control(run_dir, "pause")
    assert inbox.take() == ["pause"]
    assert "made before this driver started" in capsys.readouterr().out
    assert os.listdir(os.path.join(run_dir, "control")) == []
    assert 0 < process_start_ns() < time.time_ns()


def test_samples_round_trip(tmp_path):
    run_dir = str(tmp_path / "r")
    record = {"step": 2, "prompt": "1+1=", "completion": "2", "answer": "2", "reward": 1.0,
              "scores": {"math": 1.0}, "failures": {}, "advantage": float("nan"), "length": 2,
              "finish_reason": "stop", "weight_version": 2}
    assert read_samples(run_dir) == {"step": None, "steps": [], "samples": []}
    write_samples(run_dir, 1, [dict(record, step=1, prompt=f"p{i}") for i in range(5)])
    write_samples(run_dir, 12, [record])
    latest = read_samples(run_dir)
    assert (latest["step"], latest["steps"]) == (12, [1, 12])
    assert latest["samples"] == [dict(record, advantage=None)]
    first = read_samples(run_dir, step=1, limit=3)
    assert [s["prompt"] for s in first["samples"]] == ["p0", "p1", "p2"]
    assert read_samples(run_dir, step=7)["samples"] == []
    assert sorted(os.listdir(os.path.join(run_dir, "samples"))) == ["step_000001.jsonl", "step_000012.jsonl"]


def test_metrics_skip_a_torn_last_line(tmp_path):
    run_dir = str(tmp_path / "r")
    os.makedirs(run_dir)
    assert read_metrics(run_dir) == []
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write('{"step": 0, "eval/accuracy": 0.5}\n{"step": 1, "reward/mean": 0.1}\n{"step": 2, "reward/mean": NaN}\n')
        f.write('{"step": 3, "reward/me')  # the writer crashed mid-line
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert read_metrics(run_dir, since=1) == [{"step": 2, "reward/mean": None}]
    assert read_metrics(run_dir, since=2) == []


@pytest.mark.parametrize("name", ["..", "../r", "r/..", ".", "", ".hidden", "a/b", "/etc", "missing", "empty", "afile"])
def test_run_names_that_are_not_runs_are_rejected(tmp_path, name):
    runs = tmp_path / "runs"
    RunStatus(str(runs / "r"), "r", 1)
    RunStatus(str(runs / ".hidden"), "h", 1)
    (runs / "empty").mkdir()  # a folder, but not a run
    (runs / "afile").write_text("x")
    RunStatus(str(tmp_path / "outside"), "o", 1)  # a run beside the runs folder
    RunStatus(str(runs / "my run"), "my run", 1)  # any single path component is fine
    assert resolve_run(str(runs), "r") == os.path.join(str(runs), "r")
    assert resolve_run(str(runs), "my run") == os.path.join(str(runs), "my run")
    with pytest.raises(RunNotFound):
        resolve_run(str(runs), name)
    with pytest.raises(RunNotFound):
        resolve_run(str(runs / "r"), "../outside")


def test_folder_without_status_json(tmp_path):
    runs = tmp_path / "runs"
    old = runs / "old"
    old.mkdir(parents=True)
    (old / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.4}\n'
                                       '{"step": 1, "reward/mean": 0.3, "timing/step": 1.5, "weight_version": 1}\n')
    (old / "recipe.yaml").write_text("trainer:\n  total_steps: 8\n")
    s = read_status(str(old))
    assert (s["state"], s["step"], s["total_steps"], s["has_status"]) == ("unknown", 1, 8, False)
    assert s["latest_metrics"]["reward/mean"] == 0.3 and s["last_step_timings"] == {"timing/step": 1.5}
    (old / "checkpoints" / "final").mkdir(parents=True)
    assert read_status(str(old))["state"] == "completed"

    RunStatus(str(runs / "new"), "new", 3).update(state="running", step=2)
    (runs / "not-a-run").mkdir()
    rows = {r["run"]: r for r in list_runs(str(runs))}
    assert set(rows) == {"old", "new"}
    assert (rows["new"]["state"], rows["new"]["step"], rows["new"]["total_steps"]) == ("running", 2, 3)
    assert rows["old"]["state"] == "completed" and rows["old"]["heartbeat"] is None
    assert list_runs(str(tmp_path / "nothing-here")) == []


@pytest.mark.parametrize("module", ["rlvr.run.status", "rlvr.service.prometheus", "rlvr.cli.main"])
def test_doctests(module):
    """The pure helpers of the file contract, the /metrics text and `rlvr status`'s formatting."""
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


BAD_FOLDERS = {
    "heartbeat_s is a string": lambda d: _edit_status(str(d), heartbeat_s="abc", state="running"),
    "a pid no system has": lambda d: _edit_status(str(d), pid=10**30, state="running"),
    "started_at is a list": lambda d: _edit_status(str(d), started_at=[1]),
    "status.json is a FIFO": lambda d: (os.remove(d / "status.json"), os.mkfifo(d / "status.json"),
                                        (d / "metrics.jsonl").write_text('{"step": 1}\n')),
    "status.json nested too deep": lambda d: (d / "status.json").write_text("[" * 100_000),
    "recipe.yaml is a billion laughs": lambda d: (d / "recipe.yaml").write_text(
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"),
    "recipe.yaml links to a secret": lambda d: os.symlink("/etc/passwd", d / "recipe.yaml"),
    "metrics.jsonl is a FIFO": lambda d: os.mkfifo(d / "metrics.jsonl"),
}


@pytest.mark.parametrize("damage", sorted(BAD_FOLDERS))
def test_one_bad_run_folder_does_not_break_the_others(tmp_path, damage):
    """A run folder is not trusted: whatever it holds, listing and reading every run answers
    at once, the good run is intact, and the bad one is listed with a state (or not at all)."""
    runs = tmp_path / "runs"
    RunStatus(str(runs / "good"), "good", 3).update(state="running", step=2)
    RunStatus(str(runs / "bad"), "bad", 3).update(state="completed", step=3)
    BAD_FOLDERS[damage](runs / "bad")
    done = []
    worker = threading.Thread(target=lambda: done.append((list_runs(str(runs)), read_status(str(runs / "bad")))),
                              daemon=True)
    t0 = time.monotonic()
    worker.start()
    worker.join(timeout=10)
    assert done, "a reader hung"
    assert time.monotonic() - t0 < 5
    rows, bad = done[0]
    assert {r["run"]: r["state"] for r in rows}["good"] == "running"
    assert bad["state"] in WRITTEN_STATES + READER_STATES
    assert "root:" not in json.dumps(bad) and len(json.dumps(bad)) < 100_000  # no linked file, no expansion


def test_a_symlinked_run_folder_is_not_served(tmp_path):
    runs = tmp_path / "runs"
    RunStatus(str(tmp_path / "elsewhere"), "elsewhere", 1)
    runs.mkdir()
    os.symlink(tmp_path / "elsewhere", runs / "linked")
    assert list_runs(str(runs)) == []
    with pytest.raises(RunNotFound):
        resolve_run(str(runs), "linked")


def test_prometheus_page_survives_a_status_json_with_wrong_types(tmp_path):
    from rlvr.service.prometheus import exposition

    runs = tmp_path / "runs"
    RunStatus(str(runs / "bad"), "bad", 3).update(state="running", step=2)
    _edit_status(str(runs / "bad"), reward_failures=[1, 2], latest_metrics="x", step={"a": 1})
    text = exposition([read_status(str(runs / "bad"))], list(WRITTEN_STATES + READER_STATES))
    assert 'rlvr_run_active{run="bad"} 1' in text
