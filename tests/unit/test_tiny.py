"""rlvr.models.tiny: the built-in tokenizer and a fast (few SFT steps) tiny-model build.

The full default build (and its accuracy) is exercised by the e2e tests.
"""

import json
import os

import pytest

from rlvr.data import prompts as data_prompts
from rlvr.data import rows as data

from rlvr.models import tiny
from rlvr.config import ArithmeticConfig, DataConfig, ModelConfig, TinyModelConfig

FAST = TinyModelConfig(sft_steps=3, sft_batch_size=16, sft_warmup_steps=1)
SMALL_TASK = ArithmeticConfig(num_train=64, num_eval=16)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"), FAST, SMALL_TASK, progress=False)


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.tokenize("1234567890+98765=111111")
    assert tokens == list("1234567890+98765=111111")
    for token in tokenizer.get_vocab():  # no merge ever spans a digit and anything else
        if any(c.isdigit() for c in token):
            assert len(token) == 1, token
    assert 300 <= len(tokenizer) <= 400


def test_chat_template_and_special_tokens(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "07+48="}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n07+48=<|im_end|>\n<|im_start|>assistant\n"
    no_gen = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert no_gen == "<|im_start|>user\nx<|im_end|>\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("55<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and len(ids) == 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == "55"


def test_tokenizer_build_is_reproducible(tokenizer):
    assert tiny.build_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_fast_build_loads_and_generates(built):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "rlvr_tiny.json"):
        assert os.path.isfile(os.path.join(built, name)), name
    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert model.config.tie_word_embeddings and model.config.hidden_size == FAST.hidden_size
    assert model.config.vocab_size == len(tok)
    assert GenerationConfig.from_pretrained(built).eos_token_id == tok.eos_token_id
    info = json.load(open(os.path.join(built, "rlvr_tiny.json")))
    assert info["sft_steps_taken"] == 3 and info["builder_version"] == tiny.BUILDER_VERSION

    (prompt,) = data_prompts.render_prompts(data.arithmetic_rows(SMALL_TASK, "eval")[:1], tok, DataConfig())
    out = model.generate(torch.tensor([prompt.token_ids]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > len(prompt.token_ids)
    held_out = data_prompts.render_prompts(data.arithmetic_rows(SMALL_TASK, "eval"), tok, DataConfig())
    assert 0.0 <= tiny.greedy_accuracy(built, held_out, max_new_tokens=4) <= 1.0


def test_build_is_reproducible_and_replaces_folder(built, tmp_path):
    from safetensors.torch import load_file

    again = tiny.build_tiny_model(str(tmp_path / "m"), FAST, SMALL_TASK, progress=False)
    first, second = load_file(os.path.join(built, "model.safetensors")), load_file(os.path.join(again, "model.safetensors"))
    assert first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)

    (tmp_path / "m" / "stale.txt").write_text("old")  # a rebuild replaces the folder as a whole
    tiny.build_tiny_model(again, FAST, SMALL_TASK, progress=False)
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temp dirs left behind


def test_ensure_tiny_model_caches_by_config(tmp_path):
    model_cfg = ModelConfig(cache_dir=str(tmp_path / "cache"), tiny=TinyModelConfig(sft_steps=0))
    path = tiny.ensure_tiny_model(model_cfg, SMALL_TASK, progress=False)
    assert os.path.basename(path) == tiny.tiny_model_key(model_cfg.tiny, SMALL_TASK)
    stamp = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    assert tiny.ensure_tiny_model(model_cfg, SMALL_TASK, progress=False) == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == stamp  # not rebuilt
    other = ArithmeticConfig(num_train=64, num_eval=16, seed=5)
    assert tiny.tiny_model_key(model_cfg.tiny, other) != os.path.basename(path)
    assert tiny.tiny_model_key(TinyModelConfig(sft_steps=1), SMALL_TASK) != os.path.basename(path)


def test_ensure_tiny_model_builds_once_under_concurrency(tmp_path, monkeypatch):
    import threading
    import time

    calls = []
    real_build = tiny.build_tiny_model

    def slow_build(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # let the other caller reach the lock while this one builds
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tiny, "build_tiny_model", slow_build)
    model_cfg = ModelConfig(cache_dir=str(tmp_path), tiny=TinyModelConfig(sft_steps=0))
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(tiny.ensure_tiny_model(model_cfg, SMALL_TASK, False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(paths) == 2 and paths[0] == paths[1]
