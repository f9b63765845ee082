"""Rollout engine on plain `transformers` generate: same interface as `VLLMEngine`.

Useful where vLLM is not installed or does not support a model, and as the slow
reference the vLLM engine is tested against. At the tiny model's size it is as
fast as vLLM on CPU (PLATFORM.md); at 25M+ parameters vLLM is about 2x faster.

* Prompts of one call are expanded to `n` rows each (grouped by prompt) and
  left-padded into batches of at most `MAX_BATCH_ROWS`; `generate` runs with
  its KV cache.
* Sampling is set entirely from the `SamplingSpec`: a fresh `GenerationConfig`
  with every knob explicit, because `generate` fills unset fields from the
  model's `generation_config.json` and then from library defaults (top_k=50),
  which would silently change the sampling distribution.
* Logprobs come from `output_scores`, the *processed* scores (after
  temperature, top-k and top-p warpers): log-softmax of those at the chosen
  token is the sampling logprob, the same quantity vLLM returns with
  `logprobs_mode="processed_logprobs"`. Greedy (temperature 0) has no warpers,
  so its logprobs are the raw model's.
* Stopping: the model's generation-config eos ids plus the tokenizer's eos.
  A completion keeps its eos token (finish_reason "stop"); rows that finished
  early are cut at the eos, dropping generate's padding. `ignore_eos` passes an
  empty eos list, so nothing stops early and eos stays sampleable, as in vLLM.
* Randomness: the process's torch RNG, seeded with the engine seed at start and
  re-seeded with `spec.seed` when a call sets one (so seeded calls repeat).
* `update_weights` is `load_state_dict` (strict, except a tied `lm_head`).
"""

from __future__ import annotations

import time

import torch

from rlvr.config import RolloutConfig
from rlvr.sync.engine import WeightSyncMixin
from rlvr.types import Completion, SamplingSpec

MAX_BATCH_ROWS = 256  # rows (prompt x sample) per generate call


class HFEngine(WeightSyncMixin):
    """transformers `generate` with the rollout engine interface."""

    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int, dtype: str = "float32"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(seed)
        use_cuda = cfg.gpus_per_engine > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        self.eos_ids = _eos_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.start_seconds = time.perf_counter() - start

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        """`spec.n` completions per prompt, grouped by prompt in prompt order."""
        if spec.seed is not None:
            torch.manual_seed(spec.seed)
        rows = [(i, list(p)) for i, p in enumerate(prompts) for _ in range(spec.n)]
        completions = []
        for start in range(0, len(rows), MAX_BATCH_ROWS):
            completions.extend(self._generate_batch(rows[start:start + MAX_BATCH_ROWS], spec))
        return completions

    def generate_requests(self, requests: list[tuple[list[int], SamplingSpec]]) -> list[list[Completion]]:
        """Independent requests, each with its own sampling: the completions of each, one by one."""
        return [self.generate([prompt], spec) for prompt, spec in requests]

    def _generate_batch(self, rows: list[tuple[int, list[int]]], spec: SamplingSpec) -> list[Completion]:
        width = max(len(ids) for _, ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (_, ids) in enumerate(rows):
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[r, width - len(ids):] = 1
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(spec),
        )
        new_tokens = out.sequences[:, width:].cpu()
        # scores: one [rows, vocab] tensor per step, already temperature/top-k/top-p processed.
        chosen = out.sequences[:, width:]
        logprobs = torch.stack([
            torch.log_softmax(step.float(), dim=-1).gather(-1, chosen[:, t:t + 1]).squeeze(-1)
            for t, step in enumerate(out.scores)
        ], dim=1).cpu()
        eos = set() if spec.ignore_eos else set(self.eos_ids)
        completions = []
        for r, (prompt_index, _) in enumerate(rows):
            tokens = new_tokens[r].tolist()
            stop = next((t + 1 for t, tok in enumerate(tokens) if tok in eos), None)
            length = stop if stop is not None else len(tokens)
            completions.append(Completion(
                prompt_index=prompt_index,
                token_ids=tokens[:length],
                logprobs=logprobs[r, :length].tolist(),
                text=self.tokenizer.decode(tokens[:length], skip_special_tokens=True),
                finish_reason="stop" if stop is not None else "length",
                weight_version=self._version,
            ))
        return completions

    def _generation_config(self, spec: SamplingSpec):
        from transformers import GenerationConfig

        greedy = spec.temperature <= 0
        return GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else spec.temperature,
            top_p=1.0 if greedy else spec.top_p,
            top_k=0 if greedy or spec.top_k <= 0 else spec.top_k,  # 0 disables top-k
            max_new_tokens=spec.max_tokens,
            min_new_tokens=0,
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=[] if spec.ignore_eos else self.eos_ids,
            pad_token_id=self.pad_id,
            bos_token_id=None,
            output_scores=True,
            return_dict_in_generate=True,
            use_cache=True,
        )

    @torch.no_grad()
    def _load_weights(self, named_tensors) -> None:
        """Copy HF-named full tensors into the model's own, one at a time (streamed)."""
        own = self.model.state_dict()
        seen = set()
        for name, tensor in named_tensors:
            if name not in own:
                raise KeyError(f"weights do not match the model: unexpected {name!r}")
            own[name].copy_(tensor)
            seen.add(name)
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        missing = set(own) - seen - tied
        if missing:
            raise KeyError(f"weights do not match the model: missing {sorted(missing)[:5]}")

    def _sync_device(self) -> str:
        return self.device.type

    def ping(self) -> bool:
        return True


def _eos_ids(*sources) -> list[int]:
    ids: list[int] = []
    for source in sources:
        for token in (source if isinstance(source, (list, tuple)) else [source]):
            if token is not None and token not in ids:
                ids.append(int(token))
    return ids
