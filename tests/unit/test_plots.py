"""`rlvr plot` / `rlvr.run.plots`: charts from a run's metrics.jsonl, written whole, readable PNGs."""

from __future__ import annotations

import os

import pytest

from rlvr.cli import main as cli

from rlvr.run import plots
from rlvr.run.metrics import MetricsLogger

CHARTS = {"reward.png", "accuracy.png", "kl.png", "response_length.png", "timings.png"}


def _run(tmp_path, steps=12, eval_every=4, torn=False) -> str:
    run = str(tmp_path / "run")
    log = MetricsLogger(run)
    log.log({"step": 0, "eval/accuracy": 0.3})
    for s in range(1, steps + 1):
        row = {"step": s, "reward/mean": s / steps, "reward/std": 0.1, "accuracy": s / steps,
               "response_length/mean": 4.0, "response_length/max": 6.0, "train/kl": 0.0, "train/approx_kl": 1e-3,
               "timing/generate": 0.3, "timing/reward": 0.05, "timing/train": 0.4, "timing/sync": 0.03,
               "timing/step": 0.8}
        if s % eval_every == 0:
            row["eval/accuracy"] = 0.3 + s / 100
        log.log(row)
    log.close()
    if torn:
        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.write('{"step": 13, "reward/me')
    return run


def _is_png(path: str, min_bytes: int = 2000) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > min_bytes


def test_plot_run_writes_every_chart(tmp_path):
    run = _run(tmp_path, torn=True)
    paths = plots.plot_run(run)
    assert {os.path.basename(p) for p in paths} == CHARTS
    assert all(_is_png(p) for p in paths)
    assert sorted(os.listdir(os.path.join(run, "plots"))) == sorted(CHARTS)  # no temporary files left


def test_charts_without_data_are_skipped(tmp_path):
    run = str(tmp_path / "only-eval")
    log = MetricsLogger(run)
    log.log({"step": 0, "eval/accuracy": 0.4})
    log.close()
    assert [os.path.basename(p) for p in plots.plot_run(run)] == ["accuracy.png"]


def test_cli_plot(tmp_path, capsys):
    run = _run(tmp_path)
    out = str(tmp_path / "charts")
    assert cli.main(["plot", run, "--out", out]) == 0
    assert sorted(os.listdir(out)) == sorted(CHARTS)
    assert capsys.readouterr().out.count(".png") == len(CHARTS)
    assert cli.main(["plot", str(tmp_path / "nope")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_plot_run_safely_warns_instead_of_failing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert plots.plot_run_safely(str(empty)) == []
    assert "could not write plots" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no metrics.jsonl rows"):
        plots.plot_run(str(empty))


def test_phase_bar_shows_progress_or_does_nothing(capsys):
    from rlvr.config import Config
    from rlvr.run.console import phase_bar

    cfg = Config()
    bar = phase_bar(cfg.logging.progress, 3, "starting engines", unit="group")
    for _ in range(3):
        bar.update()
    bar.close()
    assert "starting engines" in capsys.readouterr().err
    cfg.logging.progress = False
    quiet = phase_bar(cfg.logging.progress, 3, "starting engines")
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err == ""
