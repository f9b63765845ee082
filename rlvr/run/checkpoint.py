"""Atomic Hugging Face-format checkpoints, and resumable training checkpoints.

A checkpoint folder is written next to its final name (`<name>.tmp-<pid>`), every
file fsynced, then renamed into place, so a reader never sees a half-written
folder: either the old checkpoint, or the complete new one. The folder holds
`model.safetensors` + `config.json` (+ generation config and tokenizer files
copied from the starting model) and loads with `from_pretrained` and in vLLM.

A training checkpoint (`runs/<run>/checkpoints/step_NNNNNN/` and `final/`) is that
HF folder plus what resuming needs: `trainer/` (the backend's sharded model,
optimizer and scheduler state, one RNG file per rank), `rlvr_state.json` (step,
weight version, the prompt sampler's position) and `manifest.json` (size and
sha256 of every file). The trainer ranks write into `<name>.tmp`, rank 0 seals it
(`finalize_checkpoint`: run state, manifest, fsync, rename). Ranks must see one
file system (a shared one across nodes). `checkpoint.resume=auto` takes the newest
checkpoint whose files match its manifest (`find_resume_point`), warning about
each one it skips.
"""

from __future__ import annotations

import json
import os
import shutil

from rlvr.run.files import atomic_folder_write, replace_folder

COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def resolve_model_dir(model_path: str) -> str:
    """A local folder for `model_path` (hub ids resolve through the local HF cache)."""
    if os.path.isdir(model_path):
        return model_path
    from huggingface_hub import snapshot_download

    return snapshot_download(model_path, local_files_only=True, allow_patterns=["*.json", "*.txt", "*.model", "*.jinja"])


def write_hf_model(folder: str, base_model_path: str, state: dict) -> None:
    """`state` (HF parameter names -> tensors) as an HF model in `folder` (safetensors,
    config and tokenizer files copied from the starting model)."""
    from safetensors.torch import save_file

    source = resolve_model_dir(base_model_path)
    with open(os.path.join(source, "config.json")) as f:
        tied = json.load(f).get("tie_word_embeddings", False)
    tensors = {k: v.detach().contiguous() for k, v in state.items() if not (tied and k == "lm_head.weight")}
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    for name in COPIED_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(folder, name))


def save_hf_checkpoint(path: str, base_model_path: str, state: dict, extra: dict | None = None) -> str:
    """Write `state` as an HF model folder at `path`, atomically."""

    def write(tmp: str) -> None:
        write_hf_model(tmp, base_model_path, state)
        if extra is not None:
            with open(os.path.join(tmp, "rlvr_state.json"), "w") as f:
                json.dump(extra, f, indent=2)

    return atomic_folder_write(path, write)


# --------------------------------------------------------------------------- resumable checkpoints

MANIFEST = "manifest.json"
STATE = "rlvr_state.json"


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(folder):
        out += [os.path.relpath(os.path.join(dirpath, n), folder) for n in names]
    return sorted(f for f in out if f != MANIFEST)


def finalize_checkpoint(tmp: str, path: str, run_state: dict, files: dict[str, str] | None = None) -> str:
    """Seal a checkpoint the trainer ranks wrote into `tmp`: add `rlvr_state.json` (and `files`,
    name -> text, e.g. an async run's batch in flight) and a manifest (size and sha256 of every
    file), fsync everything, then rename to `path` (replacing an older one of that name). A
    reader sees the old folder or the new one."""
    with open(os.path.join(tmp, STATE), "w") as f:
        json.dump(run_state, f, indent=2)
    for name, text in (files or {}).items():
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    manifest = {name: {"bytes": os.path.getsize(os.path.join(tmp, name)), "sha256": _sha256(os.path.join(tmp, name))}
                for name in _files(tmp)}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump({"files": manifest}, f, indent=1)
    replace_folder(tmp, path)
    return path


def check_checkpoint(path: str) -> str | None:
    """None if `path` is a complete checkpoint whose files match its manifest, else why not."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            files = json.load(f)["files"]
        with open(os.path.join(path, STATE)) as f:
            json.load(f)
    except (OSError, ValueError, KeyError) as e:
        return f"no readable manifest or run state ({type(e).__name__}: {e})"
    for name, expected in files.items():
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            return f"{name} is missing"
        if os.path.getsize(full) != expected["bytes"]:
            return f"{name} has {os.path.getsize(full)} bytes, the manifest says {expected['bytes']}"
        if _sha256(full) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(step, folder) of every sealed checkpoint of a run, newest first (in-flight `*.tmp*`
    and `*.old-*` folders are not checkpoints)."""
    root = os.path.join(run_dir, "checkpoints")
    out = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        if ".tmp" in name or ".old-" in name or not os.path.isdir(folder):
            continue
        try:
            with open(os.path.join(folder, STATE)) as f:
                out.append((int(json.load(f)["step"]), folder))
        except (OSError, ValueError, KeyError, TypeError):
            out.append((-1, folder))  # unreadable: still listed, so resume can say why it skips it
    return sorted(out, key=lambda item: (item[0], os.path.basename(item[1]) == "final"), reverse=True)


def find_resume_point(run_dir: str, warn=print) -> str | None:
    """The newest valid checkpoint of the run; corrupt or partial ones are skipped with a
    warning naming them (`checkpoint.resume=auto`)."""
    for _, folder in list_checkpoints(run_dir):
        problem = check_checkpoint(folder)
        if problem is None:
            return folder
        warn(f"[rlvr] resume: skipping checkpoint {folder}: {problem}")
    return None


def prune_checkpoints(run_dir: str, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` step checkpoints (`final` is never deleted)."""
    if keep_last <= 0:
        return []
    steps = [folder for _, folder in list_checkpoints(run_dir) if os.path.basename(folder).startswith("step_")]
    for folder in steps[keep_last:]:
        shutil.rmtree(folder, ignore_errors=True)
    return steps[keep_last:]


def resume_point(resume: str | None, run_dir: str) -> str | None:
    """The checkpoint `checkpoint.resume` names: none, the newest valid one (`auto`), or a folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = find_resume_point(run_dir)
        print(f"[rlvr] resume: {'from ' + found if found else 'no checkpoint yet, starting fresh'}", flush=True)
        return found
    path = os.path.abspath(os.path.expanduser(resume))
    problem = check_checkpoint(path)
    if problem is not None:
        raise RuntimeError(f"checkpoint.resume={resume}: not a usable checkpoint: {problem}")
    return path

