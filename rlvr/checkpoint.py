"""Atomic Hugging Face-format checkpoints.

A checkpoint folder is written next to its final name (`<name>.tmp-<pid>`), every
file fsynced, then renamed into place, so a reader never sees a half-written
folder: either the old checkpoint, or the complete new one. The folder holds
`model.safetensors` + `config.json` (+ generation config and tokenizer files
copied from the starting model) and loads with `from_pretrained` and in vLLM.
"""

from __future__ import annotations

import json
import os
import shutil

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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(dirpath)


def atomic_folder_write(path: str, write) -> str:
    """Call `write(tmp_dir)`, then fsync and rename tmp_dir to `path` (replacing it)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
        _fsync_tree(tmp)
        if os.path.exists(path):
            old = f"{path}.old-{os.getpid()}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_model_dir(model_path: str) -> str:
    """A local folder for `model_path` (hub ids resolve through the local HF cache)."""
    if os.path.isdir(model_path):
        return model_path
    from huggingface_hub import snapshot_download

    return snapshot_download(model_path, local_files_only=True, allow_patterns=["*.json", "*.txt", "*.model", "*.jinja"])


def save_hf_checkpoint(path: str, base_model_path: str, state: dict, extra: dict | None = None) -> str:
    """Write `state` (HF parameter names -> tensors) as an HF model folder at `path`."""
    from safetensors.torch import save_file

    source = resolve_model_dir(base_model_path)
    with open(os.path.join(source, "config.json")) as f:
        tied = json.load(f).get("tie_word_embeddings", False)

    def write(tmp: str) -> None:
        tensors = {k: v.detach().contiguous() for k, v in state.items() if not (tied and k == "lm_head.weight")}
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name in COPIED_FILES:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copy2(os.path.join(source, name), os.path.join(tmp, name))
        if extra is not None:
            with open(os.path.join(tmp, "rlvr_state.json"), "w") as f:
                json.dump(extra, f, indent=2)

    return atomic_folder_write(path, write)
