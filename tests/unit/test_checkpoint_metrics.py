import json
import os

import pytest
import torch

from rlvr.run.checkpoint import save_hf_checkpoint
from rlvr.run.files import atomic_folder_write
from rlvr.run.metrics import MetricsLogger, read_metrics
from rlvr.run.console import console_line


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


def _sealed(run_dir, name: str, step: int, payload: bytes = b"weights") -> str:
    """A checkpoint as the trainer ranks would leave it, sealed by finalize_checkpoint."""
    from rlvr.run.checkpoint import finalize_checkpoint

    tmp = os.path.join(run_dir, "checkpoints", f"{name}.tmp")
    os.makedirs(os.path.join(tmp, "trainer"))
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(payload * 100)
    with open(os.path.join(tmp, "trainer", "rng_rank0.pt"), "wb") as f:
        f.write(b"rng")
    return finalize_checkpoint(tmp, os.path.join(run_dir, "checkpoints", name), {"step": step, "sampler": {}})


def test_sealed_checkpoints_verify_and_resume_skips_damaged_ones(tmp_path):
    from rlvr.run.checkpoint import check_checkpoint, find_resume_point, list_checkpoints

    run = str(tmp_path)
    two, four, six = (_sealed(run, f"step_{s:06d}", s) for s in (2, 4, 6))
    os.makedirs(os.path.join(run, "checkpoints", "step_000008.tmp"))  # a write in flight: not a checkpoint
    assert [s for s, _ in list_checkpoints(run)] == [6, 4, 2]
    assert all(check_checkpoint(p) is None for p in (two, four, six))
    with open(os.path.join(six, "model.safetensors"), "r+b") as f:
        f.truncate(10)  # torn weights
    with open(os.path.join(four, "trainer", "rng_rank0.pt"), "wb") as f:
        f.write(b"RNG")  # same size, other bytes
    warnings = []
    assert find_resume_point(run, warn=warnings.append) == two
    assert "step_000006: model.safetensors has 10 bytes" in warnings[0]
    assert "step_000004: trainer/rng_rank0.pt does not match its checksum" in warnings[1]
    os.remove(os.path.join(two, "manifest.json"))
    assert "no readable manifest" in check_checkpoint(two)
    assert find_resume_point(run, warn=warnings.append) is None


def test_prune_keeps_the_newest_and_final(tmp_path):
    from rlvr.run.checkpoint import list_checkpoints, prune_checkpoints

    run = str(tmp_path)
    for s in (1, 2, 3, 4):
        _sealed(run, f"step_{s:06d}", s)
    _sealed(run, "final", 4)
    prune_checkpoints(run, keep_last=2)
    assert sorted(os.path.basename(p) for _, p in list_checkpoints(run)) == ["final", "step_000003", "step_000004"]
    assert list_checkpoints(run)[0][1].endswith("final")  # at equal steps, final first


def test_resumed_metrics_drop_the_steps_after_the_checkpoint(tmp_path):
    log = MetricsLogger(str(tmp_path))
    for step in range(6):
        log.log({"step": step})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "tor')  # the driver died mid-line
    log = MetricsLogger(str(tmp_path), append=True, keep_until_step=3)
    log.log({"step": 4})
    log.close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1, 2, 3, 4]
