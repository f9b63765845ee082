"""LoRA without Ray: peft wrapping, the merged weights the engines get, the adapter checkpoint
and `rlvr export`, on real (tiny) models. The multi-rank and engine paths are in
`tests/integration/test_lora_trainer.py`."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from rlvr.config import LoRAConfig, RecipeError, load_recipe
from rlvr.trainer import lora
from rlvr.trainer.batch import collate, collate_shared
from rlvr.types import TrainSample
from tests.unit.test_batch import _completion_logprobs, _tiny_qwen3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
CFG = LoRAConfig(rank=4, alpha=8, target_modules="all-linear")


def trained_lora(model, cfg: LoRAConfig = CFG, seed: int = 0):
    """`model` wrapped with adapters whose B is random (fresh adapters are B = 0: a no-op)."""
    wrapped = lora.wrap(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return wrapped


def batch_of(samples):
    return collate(samples, pad_id=0)


def samples(vocab: int = 50, seed: int = 1) -> list[TrainSample]:
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rand(5), rand(8)
    return [TrainSample(p, rand(c), a, [-1.0] * c) for p, c, a in
            [(p1, 4, 1.0), (p1, 6, -1.0), (p1, 2, 0.5), (p2, 5, 0.3), (p2, 3, -0.2)]]


def test_wrap_trains_only_the_adapters_and_the_optimizer_gets_only_them():
    from rlvr.config import TrainerConfig
    from rlvr.trainer.backends import decoder_layers, make_optimizer

    model = lora.wrap(_tiny_qwen3(), CFG)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # all-linear: q k v o gate up down in each of the 2 layers, not the LM head
    assert len(lora.merge_specs(model)) == 14 and not any("lm_head" in n for n in trainable)
    optimizer = make_optimizer(model.parameters(), TrainerConfig())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    assert len(decoder_layers(model)) == 2  # FSDP2 finds the layers to shard through the peft model

    listed = lora.wrap(_tiny_qwen3(), LoRAConfig(rank=2, target_modules=["q_proj", "v_proj"]))
    assert sorted({k.rsplit(".", 1)[1] for k in lora.merge_specs(listed)}) == ["q_proj", "v_proj"]


def test_merged_state_dict_equals_peft_merge_and_leaves_the_trainer_weights_alone():
    model = trained_lora(_tiny_qwen3())
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    merged = lora.merged_state_dict({k: v.detach() for k, v in model.state_dict().items()}, lora.merge_specs(model))
    assert all(torch.equal(live[k], v) for k, v in model.state_dict().items())  # nothing merged in place

    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(merged) == set(reference) and not any("lora_" in k or "base_layer" in k for k in merged)
    worst = max((merged[k] - reference[k]).abs().max().item() for k in reference)
    assert worst == 0.0, worst  # the same arithmetic as peft's merge, in the same order
    live_hf = {lora.hf_name(k): v for k, v in live.items() if ".lora_" not in k}
    changed = [k for k in reference if not torch.equal(reference[k], live_hf[k])]
    assert len(changed) == 14  # the adapted layers moved; embeddings, norms and biases did not

    # the merged plain model computes what the adapted model computes
    plain = _tiny_qwen3()
    plain.load_state_dict(merged)
    batch = batch_of(samples())
    with torch.no_grad():
        torch.testing.assert_close(_completion_logprobs(plain, batch), _completion_logprobs(model, batch),
                                   atol=1e-5, rtol=0)


def test_shared_prompt_layout_and_disabled_adapters_through_peft():
    """`trainer.share_prompts` with LoRA: the KV-cache layout gives the plain layout's
    log-probs and adapter gradients through the peft model; and the KL reference (adapters
    disabled) is exactly the base model."""
    base = _tiny_qwen3()
    model = trained_lora(copy.deepcopy(base))
    data = samples()
    shared, plain = collate_shared(data, pad_id=0), collate(data, pad_id=0)
    assert shared is not None
    results = []
    for batch in (plain, shared):
        model.zero_grad()
        logp = _completion_logprobs(model, batch)
        mask = batch["completion_mask"]
        (-(logp * mask * batch["advantages"]).sum() / mask.sum()).backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])
        results.append((logp.detach() * mask, grads))
    assert results[0][1].abs().sum() > 0
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)

    with torch.no_grad():
        with model.disable_adapter():
            off = _completion_logprobs(model, shared)
        on = _completion_logprobs(model, shared)
        torch.testing.assert_close(off, _completion_logprobs(base, shared), atol=1e-6, rtol=0)
        assert (on - off).abs().max() > 1e-3  # the adapters are on again after the context


def test_gradient_checkpointing_with_lora_gives_the_same_adapter_gradients():
    batch = batch_of(samples())
    grads = []
    for checkpointing in (False, True):
        model = _tiny_qwen3()
        if checkpointing:  # as the trainer does it with LoRA (rlvr.trainer.worker.setup)
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model = trained_lora(model)
        model.train()
        logp = _completion_logprobs(model, batch)
        (logp * batch["completion_mask"]).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ checkpoint and export

@pytest.fixture(scope="module")
def adapter_checkpoint(random_model_dir, tmp_path_factory):
    """A checkpoint folder as the trainer writes it with LoRA, and the peft model it came from."""
    from transformers import AutoModelForCausalLM

    model = trained_lora(AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32), seed=3)
    folder = str(tmp_path_factory.mktemp("ckpt") / "final")
    os.makedirs(folder)
    lora.write_adapter(folder, {k: v.detach() for k, v in model.state_dict().items()}, CFG, random_model_dir)
    return folder, model.eval()


def logits_of(model, ids=(5, 17, 42, 9, 33, 2)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits


def test_adapter_checkpoint_loads_with_peft_and_gives_the_trainers_logits(adapter_checkpoint, random_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, trained = adapter_checkpoint
    assert lora.is_adapter_folder(folder) and lora.base_model_of(folder) == os.path.abspath(random_model_dir)
    assert not os.path.exists(os.path.join(folder, "model.safetensors"))  # the adapter only
    base = AutoModelForCausalLM.from_pretrained(lora.base_model_of(folder), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, folder).eval()
    torch.testing.assert_close(logits_of(loaded), logits_of(trained), atol=1e-6, rtol=0)
    AutoTokenizer.from_pretrained(folder)  # the tokenizer travels with the adapter


def test_export_merge_writes_a_plain_model_with_the_same_logits(adapter_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlvr.cli import main as cli

    folder, trained = adapter_checkpoint
    assert cli.main(["export", folder, str(tmp_path / "merged"), "--merge"]) == 0
    assert not any(".tmp-" in name for name in os.listdir(tmp_path))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    torch.testing.assert_close(logits_of(merged), logits_of(trained), atol=1e-5, rtol=0)

    assert cli.main(["export", folder, str(tmp_path / "adapter")]) == 0  # without --merge: the adapter
    assert sorted(os.listdir(tmp_path / "adapter")) == sorted(os.listdir(folder))


def test_export_errors_are_one_line(adapter_checkpoint, random_model_dir, tmp_path, capsys):
    from rlvr.cli import main as cli

    folder, _ = adapter_checkpoint
    (tmp_path / "taken").mkdir()
    cases = [([str(tmp_path / "missing"), str(tmp_path / "a")], "no such checkpoint folder"),
             ([folder, str(tmp_path / "taken")], "already exists"),
             ([random_model_dir, str(tmp_path / "b"), "--merge"], "full fine-tuning checkpoint (no LoRA adapter)"),
             ([folder, str(tmp_path / "c"), "--merge", "--base", str(tmp_path)], "is not a model folder here"),
             ([str(tmp_path / "taken"), str(tmp_path / "d")], "is not a checkpoint")]
    for argv, fragment in cases:
        assert cli.main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("rlvr export: ") and fragment in err, err
    # a full fine-tuning checkpoint without --merge is copied as it is
    assert cli.main(["export", random_model_dir, str(tmp_path / "full")]) == 0
    assert os.path.isfile(tmp_path / "full" / "model.safetensors")


@pytest.mark.parametrize("override, fragment", [
    ("model.lora.rank=-1", "model.lora.rank: must be >= 0"),
    ("model.lora.alpha=0", "model.lora.alpha: must be > 0"),
    ("model.lora.dropout=1.0", "model.lora.dropout: must be in [0, 1)"),
    ("model.lora.target_modules=q_proj", "model.lora.target_modules: must be 'all-linear' or a non-empty list"),
    ("model.lora.target_modules=[]", "model.lora.target_modules: must be 'all-linear' or a non-empty list"),
])
def test_bad_lora_keys_name_the_key(override, fragment):
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPE, [override])
    assert fragment in str(e.value)


def test_lora_recipe_keys_load():
    cfg = load_recipe(RECIPE, ["model.lora.rank=8", "model.lora.target_modules=[q_proj,v_proj]"])
    assert cfg.model.lora.rank == 8 and cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert load_recipe(RECIPE).model.lora.rank == 0  # off by default
