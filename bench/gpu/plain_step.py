"""The same trainer step as `bench.gpu.trainer_step`, in a plain PyTorch loop (`--compare-plain`).

What issue 22 measured rlvr's trainer against: no framework, one process, the HF model in
fp32 master weights with AdamW (lr 1e-6, as the trainer's default recipe state does not
matter for timing), bf16 compute through `torch.autocast` when `--dtype bfloat16`, SDPA
attention, eager by default or with each decoder layer `torch.compile`d
(`--compare-plain compiled`). The batch, the micro-batches and the loss are the trainer's:
each micro-batch is the plain padded layout (`rlvr.trainer.batch.collate`), the decoder
runs once, the LM head runs on the completion positions only, in checkpointed chunks of
`CHUNK` tokens (log-softmax + gather per chunk, recomputed in the backward), and the loss is
PPO-clip (ratio 1: one update per step) with the token mean over the whole batch's
completion tokens, so the gradients are the trainer's (a unit test checks the gradient norm
of one step against `TrainerWorker.train_step` on a tiny shape).
"""

from __future__ import annotations

import time

CHUNK = 4096  # completion tokens per checkpointed LM-head chunk


class PlainStep:
    """`step(samples, num_micro)` -> (seconds, loss, grad_norm) on `model_dir`'s model."""

    def __init__(self, model_dir: str, dtype: str = "bfloat16", compiled: bool = False, pad_id: int = 0):
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="sdpa").to(self.device)
        self.model.config.use_cache = False
        if compiled:
            for layer in self.model.model.layers:
                layer.compile()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-6, weight_decay=0.0)
        self.autocast = dtype == "bfloat16"
        self.pad_id = pad_id

    def _micro_loss(self, batch, denominator: float):
        import torch
        from torch.utils.checkpoint import checkpoint

        from rlvr import algos

        dev = self.device
        P, T = int(batch["prompt_len"]), batch["targets"].shape[1]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            hidden = self.model.model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                                      position_ids=batch["position_ids"].to(dev)).last_hidden_state
        valid = batch["completion_tokens"].to(dev).bool()
        h = hidden[:, P - 1:P - 1 + T][valid]  # [N, H]: the positions predicting completion tokens
        targets = batch["targets"].to(dev)[valid]
        weight = self.model.get_output_embeddings().weight

        def chunk_logp(h_chunk, t_chunk):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = h_chunk @ weight.t()
            return logits.float().log_softmax(-1).gather(-1, t_chunk[:, None])[:, 0]

        logp = torch.cat([checkpoint(chunk_logp, h[i:i + CHUNK], targets[i:i + CHUNK], use_reentrant=False)
                          for i in range(0, h.shape[0], CHUNK)])
        from rlvr.algos.losses import per_token

        advantages = per_token(batch["advantages"].to(dev), valid.float()).expand(valid.shape)[valid]
        loss_tokens, _ = algos.POLICY_LOSSES["ppo_clip"](logp[None], logp.detach()[None], advantages[None],
                                                         torch.ones_like(logp)[None])
        return loss_tokens.sum() / denominator

    def step(self, samples, num_micro: int) -> tuple[float, float, float]:
        import torch

        from rlvr.trainer.batch import collate, split_micro

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        denominator = float(sum(len(s.completion_ids) for s in samples))
        total = 0.0
        for micro in filter(None, split_micro(samples, num_micro)):
            loss = self._micro_loss(collate(micro, self.pad_id), denominator)
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0).item()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, total, norm
