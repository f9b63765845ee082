"""`trainer.compile_blocks`: torch.compile a model's norm and MLP blocks, nothing else.

Why these: on a 2-core CPU, a trainer step of the benchmark model (`bench.compare_trl`) spent
73% of its time in matmuls and most of the rest in the unfused elementwise ops of RMSNorm
(pow, mean, rsqrt, mul) and the gated MLP (silu, mul). Compiling those two block kinds
fuses them: the step went from 7.6-7.9 s to 7.1-7.4 s (`torch.profiler`, steps 2-4), for
~20 s of compilation once per process.

Why not the whole model: the decoder layer touches the KV cache, whose Python state
(`layers[i].is_initialized`) changes the guards per layer, so Dynamo recompiles until its
limit and falls back to eager. Norms and MLPs are pure tensor functions of their input.

One compiled function per block class, bound to every instance of it: Dynamo lifts the
parameters as graph inputs, so all the layers share the graph (no recompile per layer).
Shapes that change between micro-batches are handled by Dynamo's automatic dynamic shapes.
"""

from __future__ import annotations

import types

BLOCK_SUFFIXES = ("RMSNorm", "MLP")  # Qwen2/Qwen3/Llama/Mistral/Gemma3 class names end so


def compile_blocks(model) -> list[str]:
    """Replace the forward of every norm/MLP block in `model` by a compiled one; returns the
    class names compiled (empty when the model has none of these blocks)."""
    import torch

    compiled: dict[type, object] = {}
    for module in model.modules():
        cls = type(module)
        if not cls.__name__.endswith(BLOCK_SUFFIXES):
            continue
        if cls not in compiled:
            compiled[cls] = torch.compile(cls.forward)
        module.forward = types.MethodType(compiled[cls], module)
    return sorted(cls.__name__ for cls in compiled)
