import json
import os

import pytest
import torch

from rlvr.checkpoint import atomic_folder_write, save_hf_checkpoint
from rlvr.metrics import MetricsLogger, console_line, read_metrics


def test_failed_write_leaves_previous_checkpoint_and_no_debris(tmp_path):
    target = tmp_path / "ckpt"
    atomic_folder_write(str(target), lambda d: open(os.path.join(d, "a.txt"), "w").write("v1"))

    def crash(d):
        open(os.path.join(d, "a.txt"), "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_folder_write(str(target), crash)
    assert (target / "a.txt").read_text() == "v1"
    assert os.listdir(tmp_path) == ["ckpt"]
    atomic_folder_write(str(target), lambda d: open(os.path.join(d, "a.txt"), "w").write("v2"))
    assert (target / "a.txt").read_text() == "v2" and os.listdir(tmp_path) == ["ckpt"]


def test_hf_checkpoint_round_trips_through_transformers(random_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_model_dir)
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    out = save_hf_checkpoint(str(tmp_path / "final"), random_model_dir, state)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))


def test_metrics_jsonl_is_valid_json_even_with_nan(tmp_path):
    log = MetricsLogger(str(tmp_path))
    row = {"step": 1, "reward/mean": 0.5, "loss": float("nan"), "grad_norm": 1.0, "response_length/mean": 3.0,
           "timing/step": 1.0, "timing/generate": 0.5}
    log.log(row)
    log.close()
    rows = read_metrics(str(tmp_path))
    assert rows == [{**row, "loss": None}]
    json.loads(open(tmp_path / "metrics.jsonl").read())
    assert "step    1" in console_line({**row, "loss": 0.0})
