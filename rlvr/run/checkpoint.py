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
import re
import shutil

from rlvr.run.files import atomic_folder_write, regular_file, replace_folder

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
_HEX64 = re.compile(r"[0-9a-f]{64}")


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
    """None if `path` is a complete checkpoint whose files match its manifest, else why not
    (one line; a checkpoint folder is not trusted: any malformed manifest or state is a reason,
    never an exception). The manifest must list every file the folder holds (each trainer
    shard included) with its size and sha256, the folder must hold trainer state, and the run
    state must have a plain step count."""
    try:
        files = _manifest_files(path)
        _read_state(path)
        present = _files(path)
    except (OSError, ValueError) as e:
        return f"no readable manifest or run state ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        return f"{unlisted[0]} is not in the manifest" + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
    if STATE not in files or not any(name.startswith("trainer/") for name in files):
        return "the manifest lists no run state or no trainer state"
    for name, expected in files.items():
        full = os.path.join(path, name)
        if not regular_file(full):
            return f"{name} is missing"
        if os.path.getsize(full) != expected["bytes"]:
            return f"{name} has {os.path.getsize(full)} bytes, the manifest says {expected['bytes']}"
        if _sha256(full) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _manifest_files(path: str) -> dict[str, dict]:
    """The manifest's {file: {"bytes", "sha256"}}, checked: ValueError naming what is wrong."""
    manifest = _load_json(os.path.join(path, MANIFEST))
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise ValueError('the manifest is not {"files": {name: {"bytes", "sha256"}}}')
    for name, entry in files.items():
        parts = name.split("/")
        if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"the manifest names a file outside the checkpoint: {name[:80]!r}")
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int and entry["bytes"] >= 0
                and isinstance(entry.get("sha256"), str) and _HEX64.fullmatch(entry["sha256"])):
            raise ValueError(f"the manifest's entry for {name[:80]!r} is not {{bytes: int, sha256: 64 hex digits}}")
    return files


def _load_json(path: str, max_bytes: int = 64 << 20):
    """A checkpoint's JSON file: a regular file (a FIFO would block), of bounded size and nesting."""
    if not regular_file(path, max_bytes):
        raise ValueError(f"{os.path.basename(path)} is missing, not a regular file or over {max_bytes >> 20} MiB")
    with open(path, "rb") as f:
        try:
            return json.loads(f.read())
        except RecursionError:
            raise ValueError(f"{os.path.basename(path)} is nested too deeply") from None


def _read_state(path: str) -> dict:
    """`rlvr_state.json`, checked: `step` and `weight_version` plain non-negative integers."""
    state = _load_json(os.path.join(path, STATE))
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError("the run state is not a JSON object with a step")
    for key in ("step", "weight_version"):
        value = state.get(key, 0)
        if type(value) is not int or not 0 <= value < 2**53:
            raise ValueError(f"the run state's {key} is {str(value)[:40]}, not a non-negative integer")
    if not isinstance(state.get("sampler", {}), (dict, type(None))):
        raise ValueError("the run state's sampler is not an object")
    return state


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
            out.append((_read_state(folder)["step"], folder))
        except (OSError, ValueError):
            out.append((-1, folder))  # unreadable: still listed, so resume can say why it skips it
    return sorted(out, key=lambda item: (item[0], os.path.basename(item[1]) == "final"), reverse=True)


def find_resume_point(run_dir: str, warn=print) -> str | None:
    """The newest valid checkpoint of the run; corrupt or partial ones are skipped with a
    warning naming them (`checkpoint.resume=auto`)."""
    listed = list_checkpoints(run_dir)
    for step, folder in listed:  # no readable step: sorted last, but said first (whatever else is found)
        if step < 0:
            warn(f"[rlvr] resume: skipping checkpoint {folder}: {check_checkpoint(folder)}")
    for step, folder in listed:
        if step < 0:
            continue
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

