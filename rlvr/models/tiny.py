"""The built-in tiny model (`model.path: builtin:tiny`), built locally and cached.

Nothing may be downloaded from a model hub on the machines this runs on, so the
default recipe, the tests and the benchmarks use a model built here in about a
minute on 2 CPU cores:

* Tokenizer: byte-level BPE trained with `tokenizers` on generated text,
  wrapped in `PreTrainedTokenizerFast` with a ChatML chat template,
  `<|im_end|>` as eos and `<|endoftext|>` as pad (Qwen's conventions, so code
  written against it also runs on real Qwen models). A `Digits` pre-tokenizer
  splits every digit into its own pre-token, so no merge can ever span two
  digits: the arithmetic task sees one token per digit, which is what makes
  it learnable by a 0.5M-parameter model. Vocabulary ~380 tokens.
* Model: a Qwen2 config (hidden 128, 2 layers, 4 heads, FFN 512 by default)
  with tied embeddings (~575K parameters), random init from
  `TinyModelConfig.seed`, then a short supervised warm start on the synthetic
  TRAIN split (loss on the answer and its eos only, batch 64, AdamW 2e-3). It
  stops on purpose at ~35-45% held-out greedy accuracy, while the SFT loss is
  still falling: a start there moved fastest under GRPO (PLATFORM.md), and RL
  has to have room to improve it visibly. It stops at a target accuracy on a
  train-split probe rather than after a fixed step count; `_sft_warm_start`
  says why. Default build: ~45 s on this 2-core CPU, 20-50 s across seeds.
* Reproducible: same config -> same weights (fixed seeds, a fixed data order,
  one torch thread during the build, which fixes float reduction order; one
  thread is also the fast choice: on 2 busy cores, 2 threads ran 10x slower).
* Saved with `save_pretrained` (safetensors) plus tokenizer and
  generation_config, so `AutoModelForCausalLM.from_pretrained` and
  `vllm.LLM(model=...)` both load the folder like any hub checkpoint.

`ensure_tiny_model` caches builds under `model.cache_dir` in a folder named by
a hash of the tiny and arithmetic configs and `BUILDER_VERSION` (bump it when
the builder changes what it writes). An fcntl lock keeps two processes (two
tests, two Ray actors) from building the same folder at once, and every build
goes to a temp dir that is renamed into place, so a folder that exists is
complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict

from rlvr.config import ArithmeticConfig, DataConfig, ModelConfig, TinyModelConfig
from rlvr.run.files import replace_folder

BUILDER_VERSION = 1
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
VOCAB_SIZE = 384
PROBE_SIZE = 512  # train prompts whose greedy accuracy ends the warm start
BUILD_THREADS = 1  # fixed: same reduction order -> same weights (see the module docstring)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_WORDS = (
    "the of and to a in is it that for on with as was be by this are or at from what which an "
    "question answer sum add plus minus equals number numbers result compute calculate solve "
    "think step first then so therefore final please give only digits value total "
    "user assistant system you are helpful math problem reasoning check verify correct wrong"
).split()


def _tokenizer_corpus(n_lines: int = 4000, seed: int = 0):
    """Generated training text: arithmetic, ChatML turns and a small English word list."""
    rng = random.Random(seed)
    for _ in range(n_lines):
        a, b = rng.randrange(1000), rng.randrange(1000)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 12)))
        role = rng.choice(["user", "assistant", "system"])
        yield f"<|im_start|>{role}\n{words.capitalize()}? {a}+{b}={a + b}<|im_end|>\n"
        yield f"Q: {a:03d}+{b:03d}=? A: {a + b}. {words}, {words.upper()}!"


def build_tokenizer(out_dir: str | None = None):
    """Train the byte-level BPE tokenizer and wrap it; save it to `out_dir` if given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=["<|im_start|>"], model_max_length=1024,
    )
    hf.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        hf.save_pretrained(out_dir)
    return hf


def _model_config(tokenizer, tiny_cfg: TinyModelConfig):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=tiny_cfg.hidden_size,
        intermediate_size=tiny_cfg.intermediate_size,
        num_hidden_layers=tiny_cfg.num_layers,
        num_attention_heads=tiny_cfg.num_heads,
        num_key_value_heads=tiny_cfg.num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        dtype="float32",
    )


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ArithmeticTask:
    """What the default tiny model is built for: the built-in addition task (`builtin:arithmetic`).
    A task gives the builder its tokenizer, its SFT data and probe, and its cache key; the tool
    task (`rlvr.models.tiny_tools`) is the other one."""

    prefix = "tiny"

    def __init__(self, arithmetic: ArithmeticConfig):
        self.cfg = arithmetic

    def key(self) -> dict:
        return {"arithmetic": asdict(self.cfg)}

    def tokenizer(self, out_dir: str | None = None):
        return build_tokenizer(out_dir)

    def sft_data(self, tokenizer):
        """(input_ids, labels, probe): right-padded train tensors, labels -100 but on what the model
        must write, and `probe(model) -> accuracy` on a fixed sample of train prompts."""
        input_ids, labels, prompts = _sft_data(tokenizer, self.cfg)
        answer_tokens = len(str(2 * self.cfg.max_operand)) + 1  # longest sum + eos
        return input_ids, labels, lambda model: _probe_accuracy(model, tokenizer, prompts, answer_tokens)


def build_tiny_model(out_dir: str, tiny_cfg: TinyModelConfig, task, progress: bool = True) -> str:
    """Build tokenizer + model (+ SFT warm start) for `task` (an `ArithmeticTask`, or an
    `ArithmeticConfig` meaning one) into `out_dir`, atomically; return its path.

    The folder is written in a temp dir beside `out_dir` and renamed into place;
    an existing `out_dir` is replaced.
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    task = ArithmeticTask(task) if isinstance(task, ArithmeticConfig) else task
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.tmp-")
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the built folder is an ordinary one
        start = time.perf_counter()
        tokenizer = task.tokenizer(tmp)
        config = _model_config(tokenizer, tiny_cfg)
        with _torch_threads(BUILD_THREADS), torch.random.fork_rng():  # leave the caller's RNG alone
            torch.manual_seed(tiny_cfg.seed)
            model = Qwen2ForCausalLM(config)
            sft_stats = _sft_warm_start(model, tiny_cfg, *task.sft_data(tokenizer), progress)
        model.save_pretrained(tmp, safe_serialization=True)
        GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                         bos_token_id=None).save_pretrained(tmp)
        info = {"builder_version": BUILDER_VERSION, "tiny": asdict(tiny_cfg), **task.key(),
                "build_seconds": round(time.perf_counter() - start, 1),
                "num_parameters": sum(p.numel() for p in model.parameters()), **sft_stats}
        with open(os.path.join(tmp, "rlvr_tiny.json"), "w") as f:
            json.dump(info, f, indent=2)
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _sft_data(tokenizer, arithmetic: ArithmeticConfig):
    """Train-split tensors for SFT plus a fixed probe (prompt ids, answers) of train rows.

    Inputs are right-padded; labels are -100 except on the answer and its eos.
    """
    import torch

    from rlvr.data.prompts import render_prompts
    from rlvr.data.rows import arithmetic_rows

    prompts = render_prompts(arithmetic_rows(arithmetic, "train"), tokenizer, DataConfig())
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    seqs, label_seqs = [], []
    for p in prompts:
        answer_ids = tokenizer(p.answer, add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(p.token_ids + answer_ids)
        label_seqs.append([-100] * len(p.token_ids) + answer_ids)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long)
    labels = torch.tensor([s + [-100] * (width - len(s)) for s in label_seqs], dtype=torch.long)
    probe = prompts[:PROBE_SIZE]  # the split is already shuffled: a fixed random sample
    return input_ids, labels, probe


def _batches(num_rows: int, batch_size: int, seed: int):
    """Endless row-index batches: a seeded shuffle per epoch, batches spanning epochs."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            epoch = list(range(num_rows))
            rng.shuffle(epoch)
            order += epoch
        yield order[:batch_size]
        order = order[batch_size:]


def _probe_accuracy(model, tokenizer, probe, max_new_tokens: int) -> float:
    texts = greedy_generate(model, tokenizer, [p.token_ids for p in probe], max_new_tokens)
    return sum(t.strip() == p.answer for t, p in zip(texts, probe)) / len(probe)


@contextlib.contextmanager
def _swapped_in(params, ema):
    """Temporarily load the EMA weights into the model's parameters."""
    import torch

    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, ema)
        try:
            yield
        finally:
            torch._foreach_copy_(params, saved)


def _train_step(model, opt, params, x, y) -> tuple[float, float]:
    """One SFT step; returns (loss, batch exact-match accuracy before the update).

    The accuracy is free: under teacher forcing, greedy decoding reproduces the
    answer and its eos exactly when every label position's argmax is the label.
    """
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=x).logits[:, :-1]
    target = y[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    exact = ((logits.detach().argmax(-1) == target) | (target == -100)).all(dim=1)
    return loss.item(), exact.float().mean().item()


def _sft_warm_start(model, tiny_cfg: TinyModelConfig, input_ids, labels, probe, progress: bool) -> dict:
    """A short, deterministic supervised warm start; returns its statistics.

    Stops at a target accuracy, not after a step count: learning addition has a
    sharp phase transition (5% -> 90% within 100-200 steps, in one seed 20 ->
    60% within 10) whose position moves by hundreds of steps between seeds, so
    a fixed step count lands anywhere from 5% to 95%. Measures taken so it stops
    near `sft_target_accuracy`, while the loss is still falling:
    * constant lr after a short warmup (no decay);
    * optionally an EMA of the weights (`sft_ema_decay` > 0) is what is
      measured and saved: raw weights at lr 2e-3 swing +-10 points of accuracy
      from one step to the next, an EMA (0.95) moves ~1 point per step. It is
      OFF by default: measured through the full RL stack, EMA warm starts at
      35-40% gained only +9 to +12 points in 60 GRPO steps, raw-weight warm
      starts +34 to +37 (sampled accuracy at temperature 1 is what GRPO
      learns from, and the EMA's was about half its greedy accuracy);
    * the EMA's greedy accuracy on a fixed probe of PROBE_SIZE train prompts
      (never the eval split) is measured every `sft_eval_every` steps, but only
      once the running teacher-forced accuracy of the training batches (free,
      and ahead of the EMA) reaches half the target: probing costs ~3 steps.
    Greedy probing draws no randomness, so the stop step and the weights stay
    deterministic. Padding sits only at the end of each row and is masked out
    of the loss, so no attention mask is needed.
    """
    import torch
    from tqdm import tqdm

    if tiny_cfg.sft_steps <= 0:
        return {"sft_steps_taken": 0}
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=tiny_cfg.sft_lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, tiny_cfg.sft_warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    batches = _batches(len(input_ids), tiny_cfg.sft_batch_size, tiny_cfg.seed)
    ema = [p.detach().clone() for p in params]
    target = tiny_cfg.sft_target_accuracy
    losses, batch_accs, probe_acc, step = [], [], None, 0
    model.train()
    bar = tqdm(total=tiny_cfg.sft_steps, desc="tiny model SFT", disable=not progress, leave=False)
    for step in range(1, tiny_cfg.sft_steps + 1):
        idx = torch.tensor(next(batches))
        loss, batch_acc = _train_step(model, opt, params, input_ids[idx], labels[idx])
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - tiny_cfg.sft_ema_decay)
        losses.append(loss)
        batch_accs.append(batch_acc)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        near = sum(batch_accs[-10:]) / len(batch_accs[-10:]) >= target / 2
        if target > 0 and near and step % max(1, tiny_cfg.sft_eval_every) == 0:
            with _swapped_in(params, ema):
                model.eval()
                probe_acc = probe(model)
                model.train()
            bar.set_postfix(loss=f"{loss:.3f}", probe_acc=f"{probe_acc:.2f}", refresh=False)
            if probe_acc >= target:
                break
    bar.close()
    with torch.no_grad():
        torch._foreach_copy_(params, ema)
    model.eval()
    tail = losses[-10:]
    return {"sft_steps_taken": step, "sft_first_loss": round(losses[0], 4),
            "sft_final_loss": round(sum(tail) / len(tail), 4), "sft_probe_accuracy": probe_acc}


def greedy_accuracy(model_dir: str, prompts, max_new_tokens: int = 6, batch_size: int = 256) -> float:
    """Exact-match accuracy of batched greedy decoding (transformers) over `prompts`.

    A completion is right when its text before eos, stripped, equals the answer.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = greedy_generate(model, tokenizer, [p.token_ids for p in prompts], max_new_tokens, batch_size)
    right = sum(t.strip() == p.answer.strip() for t, p in zip(texts, prompts))
    return right / max(1, len(prompts))


def greedy_generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
                    batch_size: int = 256) -> list[str]:
    """Batched greedy decoding with left padding; returns each completion's text before eos."""
    return [tokenizer.decode(ids, skip_special_tokens=True)
            for ids in greedy_tokens(model, tokenizer, prompt_ids, max_new_tokens, batch_size)]


def greedy_tokens(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
                  batch_size: int = 256) -> list[list[int]]:
    """Batched greedy decoding with left padding; returns each completion's token ids before eos."""
    import torch

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[list[int]] = []
    for i in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[i:i + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            out.append(row[:row.index(eos)] if eos in row else row)
    return out


def tiny_model_key(tiny_cfg: TinyModelConfig, task) -> str:
    """Cache folder name: a hash of everything that decides the built weights."""
    task = ArithmeticTask(task) if isinstance(task, ArithmeticConfig) else task
    blob = json.dumps({"v": BUILDER_VERSION, "tiny": asdict(tiny_cfg), **task.key()}, sort_keys=True)
    return f"{task.prefix}-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_tiny_model(model_cfg: ModelConfig, task, progress: bool = True) -> str:
    """Return the cached tiny model folder for these configs (`task`: an `ArithmeticTask` or the
    `ArithmeticConfig` of one, or the tool task), building it once if absent."""
    from rlvr.run.files import build_once

    task = ArithmeticTask(task) if isinstance(task, ArithmeticConfig) else task
    cache_dir = os.path.abspath(os.path.expanduser(model_cfg.cache_dir))
    path = os.path.join(cache_dir, tiny_model_key(model_cfg.tiny, task))
    return build_once(path, "rlvr_tiny.json", lambda p: build_tiny_model(p, model_cfg.tiny, task, progress=progress))
