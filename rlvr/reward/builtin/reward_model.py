"""Built-in `reward_model` verifier: a sequence-classification reward model (Bradley-Terry) scores
each (prompt, completion).

The model is any `AutoModelForSequenceClassification` checkpoint (a local folder or a hub id;
Skywork-Reward, a Llama/Qwen RM, or one you trained), with its tokenizer. It is loaded once per
verifier process, in `setup` (the reward worker calls it when the process starts, inside the
start-up allowance, so the first scoring call is not charged for it; the recipe check builds
the verifier without loading the model). It is batched: each call scores up to `batch_size`
samples in one forward pass, and the reward pool's `timeout_s` bounds each call.

Input text (`template`): `chat` renders `[{user: prompt}, {assistant: completion}]` with the
tokenizer's chat template; `plain` is `prompt + completion` as text. `auto` (default) is
`chat` when the tokenizer has a chat template, else `plain`. rlvr's prompts are already
rendered with the policy's chat template (`RewardInput.prompt`), so for an RM trained on the
policy's own format use `plain`; for an RM with its own template, set
`data.apply_chat_template: false` or accept the rendered prompt as the user's turn.

Score (`transform`): `raw` (the logit of `label`, default 0), `sigmoid` (in (0, 1): the
Bradley-Terry probability of beating a response scored 0), or `threshold` (1.0 when the raw
logit is >= `threshold`, else 0.0). The raw logit is always reported as the part `raw`.

Failures are explicit: a sample longer than `max_length` tokens fails as `truncated` (with
`on_truncation: flag` it is cut from the left instead, keeping the completion's end, scored,
and reported in the part `truncated`); a NaN logit is `invalid`; a model that cannot load
fails the verifier process's start (every sample of the step fails, counted, never a silent 0).
"""

from __future__ import annotations

import math

from rlvr.types import RewardInput, Score

TEMPLATES = ("auto", "chat", "plain")
TRANSFORMS = ("raw", "sigmoid", "threshold")
ON_TRUNCATION = ("fail", "flag")


def _whole(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TypeError(f"reward_model verifier: option {name} must be a whole number >= {low}, got {value!r}")
    return value


def _choice(name: str, value, allowed: tuple) -> str:
    if value not in allowed:
        raise ValueError(f"reward_model verifier: option {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def transform_score(raw: float, transform: str, threshold: float = 0.0) -> float:
    """The verifier's value from the model's raw logit.

    >>> transform_score(2.0, "raw"), round(transform_score(0.0, "sigmoid"), 3), transform_score(0.3, "threshold", 0.5)
    (2.0, 0.5, 0.0)
    """
    if transform == "sigmoid":
        return 1.0 / (1.0 + math.exp(-raw)) if raw >= 0 else math.exp(raw) / (1.0 + math.exp(raw))
    if transform == "threshold":
        return float(raw >= threshold)
    return raw


class RewardModelVerifier:
    """Score samples with a sequence-classification reward model at `path`.

    Options: path (required: a local folder or a hub id), max_length (tokens, default 1024),
    batch_size (samples per forward pass and per pool call, default 16), transform (raw,
    sigmoid or threshold; default raw), threshold (for transform threshold, default 0.0),
    template (auto, chat or plain), on_truncation (fail or flag), label (the logit used when
    the model has several, default 0), device (auto, cpu, cuda, cuda:N), dtype (auto,
    float32, bfloat16, float16), num_threads (torch threads on CPU; default: leave as is).
    Parts: `raw` (the logit), `tokens` (the input's length), `truncated` (1.0 when cut).

    >>> check = RewardModelVerifier(path="/no/such/rm", transform="sigmoid", batch_size=4)
    >>> check.max_batch_size, check.render(RewardInput("2+2=", "4", "4"), chat=False)
    (4, '2+2=4')
    """

    batched = True

    def __init__(self, *, path: str, max_length: int = 1024, batch_size: int = 16, transform: str = "raw",
                 threshold: float = 0.0, template: str = "auto", on_truncation: str = "fail", label: int = 0,
                 device: str = "auto", dtype: str = "auto", num_threads: int | None = None):
        if not isinstance(path, str) or not path:
            raise TypeError(f"reward_model verifier: option path must be a model folder or hub id, got {path!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise TypeError(f"reward_model verifier: option threshold must be a finite number, got {threshold!r}")
        if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"reward_model verifier: option device must be auto, cpu, cuda or cuda:N, got {device!r}")
        self.path = path
        self.max_length = _whole("max_length", max_length, 2)
        self.max_batch_size = self.batch_size = _whole("batch_size", batch_size, 1)
        self.transform = _choice("transform", transform, TRANSFORMS)
        self.template = _choice("template", template, TEMPLATES)
        self.on_truncation = _choice("on_truncation", on_truncation, ON_TRUNCATION)
        self.dtype = _choice("dtype", dtype, ("auto", "float32", "bfloat16", "float16"))
        self.threshold, self.device, self.label = float(threshold), device, _whole("label", label, 0)
        self.num_threads = None if num_threads is None else _whole("num_threads", num_threads, 1)
        self.model = self.tokenizer = None

    def setup(self) -> None:
        """Load the tokenizer and model (once per verifier process)."""
        import os

        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "float32": torch.float32,
                 "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        path = os.path.expanduser(self.path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if self.label >= model.config.num_labels:
            raise ValueError(f"reward_model verifier: option label is {self.label} but {path} has "
                             f"{model.config.num_labels} label(s)")
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self._chat = self.template == "chat" or (self.template == "auto" and bool(tokenizer.chat_template))

    def render(self, sample: RewardInput, chat: bool) -> str:
        """The text the reward model reads for `sample` (see the module doc)."""
        if not chat:
            return sample.prompt + sample.completion
        messages = [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": sample.completion}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(self, sample: RewardInput) -> list[int]:
        """The token ids the model reads for `sample` (lone surrogates replaced: tokenizers refuse them)."""
        clean = RewardInput(*(t.encode("utf-8", "replace").decode("utf-8") for t in (sample.prompt, sample.completion,
                                                                                     sample.answer)))
        return self.tokenizer(self.render(clean, self._chat), add_special_tokens=not self._chat,
                              verbose=False)["input_ids"]

    def __call__(self, samples: list[RewardInput]) -> list[Score]:
        if self.model is None:
            self.setup()
        out: list[Score] = []
        for start in range(0, len(samples), self.batch_size):
            out += self._score(samples[start:start + self.batch_size])
        return out

    def _score(self, samples: list[RewardInput]) -> list[Score]:
        import torch

        results: list[Score | None] = [None] * len(samples)
        batch = []  # (index, ids, truncated)
        for i, sample in enumerate(samples):
            try:
                ids = self.encode(sample)
            except Exception as e:  # noqa: BLE001 - a text the template or tokenizer refuses fails alone
                results[i] = Score(0.0, failure=f"invalid: cannot render or tokenize: {type(e).__name__}: {e}"[:300])
                continue
            if len(ids) <= self.max_length:
                batch.append((i, ids, False))
            elif self.on_truncation == "flag":
                batch.append((i, ids[-self.max_length:], True))
            else:
                results[i] = Score(0.0, failure=f"truncated: {len(ids)} tokens > max_length {self.max_length}")
        if batch:
            pad = self.tokenizer.pad_token_id
            width = max(len(ids) for _, ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for _, ids, _ in batch], device=self.device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for _, ids, _ in batch], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, self.label].float().tolist()
            for (i, ids, cut), raw in zip(batch, logits):
                if not math.isfinite(raw):
                    results[i] = Score(0.0, failure=f"invalid: the reward model's logit is {raw}")
                    continue
                results[i] = Score(transform_score(raw, self.transform, self.threshold),
                                   {"raw": raw, "tokens": float(len(ids)), "truncated": float(cut)})
        return results
