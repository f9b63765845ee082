"""Shared fixtures: ONE private Ray cluster and ONE tiny model per test session.

Starting Ray (~5 s) and building models is the expensive part of these tests, so
every integration/e2e test shares them instead of starting its own.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.helpers import models

# keep vLLM's CPU KV cache small and the in-process executor (fast start on 2 cores)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO, CACHE = models.REPO, models.CACHE  # the checkout; the tests' model cache (RLVR_TEST_CACHE)
# DeepSpeed's JIT-built ops (~40 s to compile on 2 cores): one folder for the whole session, the
# one runs get through `model.cache_dir` (`rlvr.cluster.connect.runtime_env_for_actors`), so tests that
# start trainer ranks directly do not compile them a second time into ~/.cache/torch_extensions
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(CACHE, "torch_extensions"))


def pytest_collection_finish(session):
    """The cached tiny models these tests need start building in the background now (`tests.helpers.models`)."""
    if os.environ.get("RLVR_TEST_PREBUILD", "1") != "0":
        session.config.rlvr_prebuild = models.start_prebuild({n for item in session.items
                                                              for n in getattr(item, "fixturenames", ())})


def pytest_sessionfinish(session):
    models.stop_prebuild(getattr(session.config, "rlvr_prebuild", None))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skip them cleanly on CPU-only machines."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray cluster (address="local": never joins someone else's)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rlvr-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=8, include_dashboard=False, _temp_dir=temp_dir,
             runtime_env={"env_vars": {"RLVR_TEST": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory):
    """The built-in tiny architecture with random weights (no SFT): fast to build."""
    from rlvr.config import ArithmeticConfig, TinyModelConfig
    from rlvr.models.tiny import build_tiny_model

    out = str(tmp_path_factory.mktemp("models") / "tiny-random")
    return build_tiny_model(out, TinyModelConfig(sft_steps=0), ArithmeticConfig())


@pytest.fixture(scope="session")
def warm_model_dir():
    """The default built-in model (SFT warm start), built once and cached in .cache/."""
    return models.warm_model()


@pytest.fixture(scope="session")
def reward_model_dir(warm_model_dir):
    """A tiny sequence-classification reward model on the warm model's backbone (`rlvr.models.tiny_rm`:
    well-formed answers above malformed ones), built once and cached in .cache/."""
    return models.reward_model()


@pytest.fixture(scope="session")
def tools_model_dir():
    """The built-in tool-calling model as recipes/tiny-tools-cpu.yaml builds it (`builtin:tiny-tools`,
    SFT warm start), built once and cached: the runs of that recipe find it."""
    return models.tools_model()
