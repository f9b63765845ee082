"""`trainer.compile`: torch.compile the policy's norm and MLP blocks (`blocks`) or whole decoder
layers (`layers`), one compiled function per class, bound to every instance of it.

Why: on a 2-core CPU a trainer step of the benchmark model (`bench.compare_trl`: 38M
parameters, 12 layers) spends ~77% of its time in matmuls and most of the rest in unfused
elementwise ops (RMSNorm's pow/mean/rsqrt/mul, the gated MLP's silu/mul, rotary embeddings,
residual adds) that compiling fuses. Measured in one process, eager and compiled taking
turns on the same samples (`python -m bench.compile`, 2026-12-05, Inductor's cache empty; the
README's Performance section): fixed 64-token completions, layers 6.81 s vs eager 7.33 s
(blocks 7.23 s); completions of 8..64 tokens (a new row length every micro-batch), layers
4.73 s vs eager 5.00 s (blocks 4.95 s). Compiling adds ~10-25 s to the first step (less with
the on-disk cache warm), which is why it is off by default: the default tiny recipe (a
2-layer model, ~0.4 s steps) never wins it back.

Both modes compile with `dynamic=True`: every micro-batch has its own length, so the first
shape change would recompile anyway (with static shapes the fixed-length step was 6.5 vs 7.4 s,
but real rows vary; for blocks, one compile instead of two: the unit test 33 -> 28.5 s with
Inductor's cache cold), and Inductor 2.13 failed on that automatic recompile for one pair of
packed rows (a symbolic-shape bug: "Exponent must be non-negative"); compiled with symbolic
shapes from the start, the same rows and a randomized sweep of rows match eager. Should a
compiler still fail on some shape, the trainer runs that call eagerly (Dynamo's
`suppress_errors`, set in the trainer's process only): slower, not a dead run.

Whole layers compile since the packed layout (`rlvr.trainer.packed`) runs without a KV cache:
the cache object's Python state changed the guards per layer, so Dynamo recompiled until its
limit and fell back to eager. `varlen_attention` is traceable (integer indices, masks made
before the layers run), so a layer is one graph: no graph breaks, no recompile per layer
(Dynamo lifts the parameters as graph inputs and the layers share the graph). On the padded
layouts (`pack_sequences` off, or a model the packed layout refuses) the shared-prompt path
still passes a cache: there `layers` compiles the norm/MLP blocks only, and says so.
"""

from __future__ import annotations

import types

SUFFIXES = {"blocks": ("RMSNorm", "MLP"),  # Qwen2/Qwen3/Llama/Mistral/Gemma3 class names end so
            "layers": ("DecoderLayer",)}


def compile_modules(model, mode: str) -> list[str]:
    """Replace the forward of every module of `model` whose class name ends with one of
    `SUFFIXES[mode]` by a compiled one; returns the class names compiled (empty when none)."""
    import torch

    compiled: dict[type, object] = {}
    for module in model.modules():
        cls = type(module)
        if not cls.__name__.endswith(SUFFIXES[mode]):
            continue
        if cls not in compiled:  # shapes symbolic from the start (see the module docstring)
            compiled[cls] = torch.compile(cls.forward, dynamic=True)
        module.forward = types.MethodType(compiled[cls], module)
    return sorted(cls.__name__ for cls in compiled)


def compile_policy(model, mode: str, packed: bool) -> list[str]:
    """`trainer.compile` on the trainer's policy; returns its startup notes. Whole layers only on
    the packed layout (the padded shared-prompt layout passes a KV cache: see the docstring)."""
    import torch

    # a compiler failure on some shape runs that call eagerly (Dynamo logs it) instead of
    # killing the run: the same function, only slower
    torch._dynamo.config.suppress_errors = True
    notes = []
    if mode == "layers" and not packed:
        mode = "blocks"
        notes.append("trainer.compile=layers: the padded layout passes a KV cache through the layers: compiling "
                     "the norm and MLP blocks only")
    names = compile_modules(model, mode)
    notes.append(f"trainer.compile: {', '.join(names) or 'nothing to compile'} compiled at the first steps "
                 "(layers: again when the rows' shapes first change); train/compile_s says how long")
    return notes


def compile_seconds() -> float | None:
    """Seconds this process has spent compiling (Dynamo tracing plus Inductor's forward and
    backward code generation), from torch's own compile timers; None where this torch has no
    such timers (a private API: read defensively)."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
    except Exception:  # noqa: BLE001 - a missing or changed private API just means no figure
        return None
    timers = dict(zip(names, values))
    keys = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")
    try:
        return sum(float(timers[k]) for k in keys if k in timers)
    except ValueError:
        return None
