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


def _write(folder: str, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def _manifest(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


# Each way a checkpoint folder can lie, and the reason resume gives for skipping it.
CORRUPTIONS = {
    "empty file list": (lambda c: _write(c, "manifest.json", '{"files": {}}'), "is not in the manifest"),
    "manifest is a list": (lambda c: _write(c, "manifest.json", "[]"), "no readable manifest"),
    "manifest is null": (lambda c: _write(c, "manifest.json", "null"), "no readable manifest"),
    "files is a list": (lambda c: _write(c, "manifest.json", '{"files": []}'), "no readable manifest"),
    "entry without sha256": (lambda c: _write(c, "manifest.json", json.dumps(
        {"files": {k: {"bytes": v["bytes"]} for k, v in _manifest(c)["files"].items()}})), "no readable manifest"),
    "bytes as a string": (lambda c: _write(c, "manifest.json", json.dumps(
        {"files": {k: {**v, "bytes": str(v["bytes"])} for k, v in _manifest(c)["files"].items()}})),
        "no readable manifest"),
    "a name outside the folder": (lambda c: _write(c, "manifest.json", json.dumps(
        {"files": {**_manifest(c)["files"], "../../etc/passwd": {"bytes": 1, "sha256": "0" * 64}}})),
        "outside the checkpoint"),
    "step 1e400": (lambda c: _write(c, "rlvr_state.json", '{"step": 1e400, "sampler": {}}'), "no readable"),
    "garbage run state": (lambda c: _write(c, "rlvr_state.json", "\x00garbage"), "no readable"),
    "run state is a list": (lambda c: _write(c, "rlvr_state.json", "[]"), "no readable"),
    "deeply nested manifest": (lambda c: _write(c, "manifest.json", "[" * 100_000), "nested too deeply"),
    "manifest is a FIFO": (lambda c: (os.remove(os.path.join(c, "manifest.json")),
                                      os.mkfifo(os.path.join(c, "manifest.json"))), "not a regular file"),
    "an unlisted trainer shard": (lambda c: _write(os.path.join(c, "trainer"), "rng_rank1.pt", "x"),
                                  "trainer/rng_rank1.pt is not in the manifest"),
    "no trainer state": (lambda c: (os.remove(os.path.join(c, "trainer", "rng_rank0.pt")), _write(
        c, "manifest.json", json.dumps({"files": {k: v for k, v in _manifest(c)["files"].items()
                                                  if not k.startswith("trainer/")}}))), "no trainer state"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_lying_checkpoint_is_skipped_with_a_warning_for_the_older_valid_one(tmp_path, corruption):
    from rlvr.run.checkpoint import check_checkpoint, find_resume_point, list_checkpoints, resume_point

    damage, reason = CORRUPTIONS[corruption]
    run = str(tmp_path)
    older, newer = _sealed(run, "step_000002", 2), _sealed(run, "step_000004", 4)
    damage(newer)
    problem = check_checkpoint(newer)
    assert problem is not None and reason in problem and "\n" not in problem, problem
    [os.path.basename(p) for _, p in list_checkpoints(run)]  # never raises
    warnings = []
    assert find_resume_point(run, warn=warnings.append) == older
    assert len(warnings) == 1 and "step_000004" in warnings[0] and reason in warnings[0]
    with pytest.raises(RuntimeError, match="not a usable checkpoint"):
        resume_point(newer, run)  # named explicitly: refused, before any actor starts
