"""`rlvr sft` without actors: the `nll` loss (hand-computed and against its loop reference), the
conversation masks on the tiny model's real ChatML tokenizer, the SFT files' errors, the `sft`
recipe section's errors (naming the dotted key) and the CLI's one-line refusals."""

from __future__ import annotations

import doctest
import json
import os

import pytest
import torch

from rlvr import algos
from rlvr.config import DataConfig, RecipeError, load_recipe
from rlvr.data import sft as sft_data
from rlvr.data.rows import DatasetError
from rlvr.types import TrainSample

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-sft-cpu.yaml")


# --------------------------------------------------------------------------- the loss


def test_nll_loss_hand_computed():
    # row 0: A = 1, tokens logp -1, -2 (both valid); row 1: A = 2, logp -0.5 valid, -3 padding
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, metrics = algos.nll_loss(logp, logp.detach(), torch.tensor([1.0, 2.0]), mask)
    # per token -A * logp: [1, 2], [2 * 0.5 = 1, 0 (masked)]
    assert loss.tolist() == [[1.0, 2.0], [1.0, 0.0]]
    # token_mean over the 3 valid tokens: (1 + 2 + 1) / 3 = 4/3
    total = algos.aggregate(loss, mask, "token_mean")
    assert total.item() == pytest.approx(4 / 3)
    # d/d logp: -A / 3 on valid tokens -> [-1/3, -1/3], [-2/3, 0]
    (grad,) = torch.autograd.grad(total, logp)
    assert grad.tolist() == [[pytest.approx(-1 / 3), pytest.approx(-1 / 3)], [pytest.approx(-2 / 3), 0.0]]
    assert metrics == {"clip_fraction": 0.0, "approx_kl": 0.0}  # on-policy: nothing to clip, no drift
    assert algos.POLICY_LOSSES["nll"] is algos.nll_loss


def test_nll_loss_matches_loop_reference_values_and_gradients():
    gen = torch.Generator().manual_seed(7)
    logp = -torch.rand(5, 8, generator=gen) * 4
    adv = torch.randn(5, generator=gen)
    mask = (torch.rand(5, 8, generator=gen) > 0.4).float()
    x_fast, x_ref = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    fast, _ = algos.nll_loss(x_fast, logp + 0.1, adv, mask)
    ref = algos.nll_loss_reference(x_ref, adv, mask)
    assert torch.allclose(fast, ref, atol=1e-6)
    (g_fast,) = torch.autograd.grad(algos.aggregate(fast, mask, "token_mean"), x_fast)
    (g_ref,) = torch.autograd.grad(algos.aggregate(ref, mask, "token_mean"), x_ref)
    assert g_fast.abs().sum() > 0 and torch.allclose(g_fast, g_ref, atol=1e-7)


def test_sft_loss_over_shards_with_the_global_normaliser_equals_the_whole_batch():
    # what 2 ranks x 2 micro-batches do: each piece divides by the whole batch's token count
    gen = torch.Generator().manual_seed(3)
    logp = -torch.rand(6, 5, generator=gen) * 3
    mask = (torch.rand(6, 5, generator=gen) > 0.3).float()
    ones = torch.ones(6)
    whole = algos.aggregate(algos.nll_loss(logp, logp, ones, mask)[0], mask, "token_mean")
    denominator = algos.normaliser(mask, "token_mean")
    pieces = sum(algos.aggregate(algos.nll_loss(logp[i:j], logp[i:j], ones[i:j], mask[i:j])[0], mask[i:j],
                                 "token_mean", denominator=denominator) for i, j in ((0, 2), (2, 3), (3, 5), (5, 6)))
    assert pieces.item() == pytest.approx(whole.item(), rel=1e-6)
    # and it is the plain cross-entropy of the valid tokens: -sum(logp) / count
    assert whole.item() == pytest.approx(-(logp * mask).sum().item() / mask.sum().item(), rel=1e-6)


# --------------------------------------------------------------------------- conversation masks


@pytest.fixture(scope="module")
def tokenizer():
    from rlvr.models.tiny import build_tokenizer

    return build_tokenizer()


def _loss_text(tokenizer, s: TrainSample) -> list[str]:
    """The loss-carrying tokens decoded, one string per run of mask-1 tokens."""
    runs, current = [], []
    for t, m in zip(s.completion_ids, s.loss_mask):
        if m:
            current.append(t)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def test_single_turn_row_trains_on_the_answer_and_eos_after_the_rl_prompt(tokenizer):
    from rlvr.data.prompts import render_prompts

    row = {"messages": [{"role": "user", "content": "07+48="}], "answer": "55"}
    s = sft_data.conversation_sample(row["messages"] + [{"role": "assistant", "content": "55"}], tokenizer)
    # the prompt is token for token the one `rlvr train` renders for the same row
    assert s.prompt_ids == render_prompts([row], tokenizer, DataConfig())[0].token_ids
    assert tokenizer.decode(s.completion_ids) == "55<|im_end|>"  # one token per digit, then eos
    assert s.loss_mask == [1, 1, 1] and s.advantage == 1.0 and s.num_loss_tokens == 3


def test_multi_turn_masks_only_assistant_turns_as_episodes_do(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "07+48="},
                {"role": "assistant", "content": "55"}, {"role": "user", "content": "and 1+1="},
                {"role": "assistant", "content": "2"}, {"role": "assistant", "content": "done"},
                {"role": "user", "content": "thanks"}]  # a trailing user message carries no loss
    s = sft_data.conversation_sample(messages, tokenizer)
    assert _loss_text(tokenizer, s) == ["55<|im_end|>", "2<|im_end|>", "done<|im_end|>"]
    # prompt + completion are the chat template's own tokens of the conversation up to the last
    # assistant turn, minus the "\n" the template writes after its end-of-turn
    full = tokenizer(tokenizer.apply_chat_template(messages[:-1], tokenize=False),
                     add_special_tokens=False)["input_ids"]
    assert s.prompt_ids + s.completion_ids == full[:-1] and tokenizer.decode(full[-1:]) == "\n"
    # the tokens between turns are the ones a multi-turn episode appends as observations
    from rlvr.data.prompts import observation_tokens

    first = len(tokenizer("55", add_special_tokens=False)["input_ids"]) + 1
    between = observation_tokens(tokenizer, messages[3:4], "<|im_end|>")
    assert s.completion_ids[first:first + len(between)] == between
    assert s.loss_mask[first:first + len(between)] == [0] * len(between)


@pytest.mark.parametrize("messages,why", [
    ([{"role": "user", "content": "hi"}], "no assistant message"),
    ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}], "no prompt before it"),
])
def test_conversations_without_a_trainable_turn_are_refused(tokenizer, messages, why):
    with pytest.raises(ValueError, match=why):
        sft_data.conversation_sample(messages, tokenizer)


def _write(path, lines) -> str:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def test_sft_files_fail_naming_the_line_and_long_rows_are_dropped_and_counted(tokenizer, tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]})
    long = json.dumps({"messages": [{"role": "user", "content": "9" * 60}, {"role": "assistant", "content": "1"}]})
    samples, skipped = sft_data.load_sft_samples(_write(tmp_path / "ok.jsonl", [good, "", long, good]), tokenizer,
                                                 None, max_length=40)
    assert len(samples) == 2 and skipped == 1
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not valid JSON"):
        sft_data.load_sft_samples(_write(tmp_path / "bad.jsonl", [good, "{nope"]), tokenizer, None, 100)
    with pytest.raises(DatasetError, match=r"shape.jsonl:1: needs a non-empty 'messages' list"):
        sft_data.load_sft_samples(_write(tmp_path / "shape.jsonl", ['{"prompt": "x", "answer": 1}']), tokenizer,
                                  None, 100)
    no_reply = json.dumps({"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(DatasetError, match=r"user.jsonl:2: no assistant message"):
        sft_data.load_sft_samples(_write(tmp_path / "user.jsonl", [good, no_reply]), tokenizer, None, 100)
    with pytest.raises(DatasetError, match="longer than sft.max_length=5"):
        sft_data.load_sft_samples(str(tmp_path / "ok.jsonl"), tokenizer, None, max_length=5)


def test_eval_loss_is_the_token_mean_nll_and_doctests_pass():
    # rows: [-1, -2 (masked out)] and [-4, -0.5]: (1 + 4 + 0.5) / 3
    samples = [TrainSample([1], [5, 6], 1.0, [0, 0], [1, 0]), TrainSample([1], [7, 8], 1.0, [0, 0])]
    assert sft_data.token_mean_nll([[-1.0, -2.0], [-4.0, -0.5]], samples) == pytest.approx(5.5 / 3)
    assert doctest.testmod(sft_data).failed == 0


# --------------------------------------------------------------------------- recipe and CLI


def test_sft_recipe_loads_and_rl_recipes_keep_an_empty_sft_section(tmp_path):
    rows = _write(tmp_path / "rows.jsonl", ["{}"])
    cfg = load_recipe(RECIPE, [f"sft.train_path={rows}", "sft.epochs=0.5"])
    assert cfg.sft.train_path == rows and cfg.sft.epochs == 0.5 and cfg.trainer.backend == "fsdp2"
    assert load_recipe(os.path.join(REPO, "recipes", "tiny-cpu.yaml")).sft.train_path is None


@pytest.mark.parametrize("override,key", [
    ("sft.epoch=2", "sft.epoch"),
    ("sft.batch_size=0", "sft.batch_size"),
    ("sft.epochs=0", "sft.epochs"),
    ("sft.max_steps=0", "sft.max_steps"),
    ("sft.train_path=/no/such/rows.jsonl", "sft.train_path"),
    ("sft.eval_path=/no/such/rows.jsonl", "sft.eval_path"),
    ("sft.max_length=abc", "sft.max_length"),
])
def test_bad_sft_values_name_the_key(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, [override])
    assert err.value.key == key


@pytest.mark.parametrize("overrides,needle", [
    ([], "sft.train_path: rlvr sft needs"),
    (["trainer.updates_per_step=2"], "trainer.updates_per_step: must be 1"),
    (["sft.batch_size=1"], "sft.batch_size: must be >= trainer.num_workers"),
    (["sft.eval_path={rows}"], "sft.eval_rows: hold out rows or give sft.eval_path, not both"),
    (["sft.nonsense=1"], "sft.nonsense"),
])
def test_rlvr_sft_refuses_in_one_line_before_starting_anything(tmp_path, capsys, overrides, needle):
    from rlvr.cli.main import main

    rows = _write(tmp_path / "rows.jsonl", ["{}"])
    train = [] if not overrides else [f"sft.train_path={rows}"]
    try:
        code = main(["sft", RECIPE, *train, *[o.format(rows=rows) for o in overrides]])
    except SystemExit as e:  # a recipe the schema refuses exits from the loader
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_a_bad_row_is_a_data_error_naming_its_line(tmp_path, capsys):
    from rlvr.cli.main import main

    rows = _write(tmp_path / "rows.jsonl", ['{"messages": [{"role": "user", "content": "x"}]}'])
    code = main(["sft", RECIPE, f"sft.train_path={rows}", f"run.output_dir={tmp_path}", "sft.eval_rows=0",
                 f"model.cache_dir={os.environ.get('RLVR_TEST_CACHE', os.path.join(REPO, '.cache', 'rlvr'))}",
                 "logging.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"rlvr: data error: {rows}:1: no assistant message: nothing to train on"]
    assert not os.path.exists(tmp_path / "tiny-sft"), "no run folder for a run that never started"


def test_console_line_of_an_sft_step():
    from rlvr.run.console import console_line

    line = console_line({"step": 3, "loss": 0.25, "grad_norm": 1.5, "eval/loss": 0.3, "timing/step": 0.2,
                         "timing/train": 0.19})
    assert line == "step    3 | eval_loss 0.3000 | loss +0.2500 | gnorm 1.500 | 0.20s (tra 0.19)"


def test_plots_of_an_sft_run_chart_its_losses_and_rl_runs_get_no_loss_chart(tmp_path):
    from rlvr.run.metrics import MetricsLogger
    from rlvr.run.plots import plot_run

    def run(name: str, sft: bool) -> list[str]:
        log = MetricsLogger(str(tmp_path / name))
        log.log({"step": 0, **({"eval/loss": 0.5} if sft else {"eval/accuracy": 0.3})})
        for s in range(1, 6):
            log.log({"step": s, "loss": 0.5 - s / 50, "grad_norm": 1.0, "timing/train": 0.2, "timing/step": 0.2,
                     **(({"eval/loss": 0.45} if s == 5 else {}) if sft else {"reward/mean": 0.5})})
        log.close()
        return sorted(os.path.basename(p) for p in plot_run(str(tmp_path / name)))

    assert run("sft", True) == ["loss.png", "timings.png"]
    assert "loss.png" not in run("rl", False)


def test_rlvr_sample_draws_the_builtin_train_split_when_asked():
    from argparse import Namespace

    from rlvr.cli.evaluate import _rows_or_exit
    from rlvr.config import ArithmeticConfig
    from rlvr.data.rows import arithmetic_rows

    def prompts(split, limit=None):
        return [r["prompt"] for r in _rows_or_exit(Namespace(data="builtin:arithmetic", split=split, limit=limit,
                                                             command="sample"))]

    assert prompts("train", 5) == [r["prompt"] for r in arithmetic_rows(ArithmeticConfig(), "train")[:5]]
    assert prompts("eval") == [r["prompt"] for r in arithmetic_rows(ArithmeticConfig(), "eval")]  # the default
    assert not set(prompts("train")) & set(prompts("eval"))  # SFT rows drawn from train never see a held-out prompt
