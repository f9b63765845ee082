"""Log-probs (and entropy) of target tokens straight from final hidden states and the LM head,
a chunk of rows at a time, never holding the `[N, V]` logits of the whole batch.

`algos.token_logprobs(h @ W.T + b, targets, temperature)` keeps a float `[N, V]` copy of the
logits for backward (and the model's own `[N, V]` logits besides); with Qwen3's vocabulary
(151,936) that is ~1.2 GB per 2,048 tokens in float32. `fused_token_logprobs` computes the
same values with `FusedLogprobs`, an autograd Function whose forward runs `chunk` rows at a
time (logits in the weight's dtype, then float for that chunk's log-softmax, as
`token_logprobs` does) and saves only h, W, b, the targets, the per-row logsumexp and entropy;
its backward recomputes each chunk's logits and turns them into grad_h and grad_W:

    z = (h W^T + b) / T,  p = softmax(z)
    d logp_target / dz = onehot(target) - p
    d entropy / dz     = -p * (z - E_p[z]),   E_p[z] = logsumexp(z) - entropy
    d / d logits       = (d / dz) / T

This is pure torch: the CPU path, and the reference for a future GPU kernel. The model
plumbing (which positions, the LM head, the fallbacks) is `rlvr.trainer.heads`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 24  # float logits per chunk when none is given: 64 MiB, ~110 rows at V = 151,936


def default_chunk(vocab: int) -> int:
    """Rows per chunk so that one chunk's float logits hold ~`CHUNK_ELEMENTS` numbers."""
    return max(16, CHUNK_ELEMENTS // max(vocab, 1))


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 for half types (`token_logprobs`' `.float()`); float64 stays (gradcheck)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _chunk_stats(h, weight, bias, targets, temperature: float, entropy: bool):
    """(logp, logsumexp, entropy or None) of one chunk's rows; z is float, temperature-scaled."""
    z = _upcast(F.linear(h, weight, bias))
    if temperature != 1.0:
        z = z / temperature
    top = z.max(dim=-1, keepdim=True).values
    z = z.sub_(top)  # shifted: exp never overflows (z is this function's own tensor)
    picked = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    e = torch.exp(z)
    total = e.sum(-1)
    log_total = total.log()
    ent = log_total - (e.unsqueeze(-2) @ z.unsqueeze(-1)).reshape(-1) / total if entropy else None
    return picked - log_total, log_total + top.squeeze(-1), ent


class FusedLogprobs(torch.autograd.Function):
    """(logp [N], entropy [N] or an empty tensor) from h [N, H], W [V, H], b [V] or None and
    targets [N]; see the module docstring. Saved for backward: h, W, b, targets, the float
    logsumexp [N] and entropy [N], never a [N, V] tensor."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature: float, entropy: bool, chunk: int):
        n = h.shape[0]
        logp = torch.empty(n, dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
        lse = torch.empty_like(logp)
        ent = torch.empty_like(logp) if entropy else logp.new_empty(0)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            lp, ls, en = _chunk_stats(h[s:e], weight, bias, targets[s:e], temperature, entropy)
            logp[s:e], lse[s:e] = lp, ls
            if entropy:
                ent[s:e] = en
        ctx.save_for_backward(h, weight, bias, targets, lse, ent)
        ctx.temperature, ctx.chunk, ctx.entropy = temperature, chunk, entropy
        ctx.set_materialize_grads(False)
        if not entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):
        h, weight, bias, targets, lse, ent = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        if grad_ent is not None and not ctx.entropy:
            grad_ent = None
        if grad_logp is None and grad_ent is None:
            return None, None, None, None, None, None, None
        n = h.shape[0]
        grad_h = torch.empty_like(h) if want_h else None
        # fp32 accumulation over chunks even for bf16 weights (one rounding at the end)
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if want_b else None
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            hc = h[s:e]
            z = _upcast(F.linear(hc, weight, bias))
            if T != 1.0:
                z = z / T
            p = (z - lse[s:e, None]).exp_()
            gl = grad_logp[s:e, None] if grad_logp is not None else None
            if grad_ent is not None:  # -g_ent * (z - E[z]) - g_logp, times p
                expect = (lse[s:e] - ent[s:e])[:, None]
                g = z.sub_(expect).mul_(-grad_ent[s:e, None])
                g = g.sub_(gl) if gl is not None else g
                g = g.mul_(p)
            else:
                g = p.mul_(-gl)
            if gl is not None:
                g.scatter_add_(-1, targets[s:e, None], gl)
            if T != 1.0:
                g = g.div_(T)
            gw = g.to(weight.dtype)
            if want_h:
                grad_h[s:e] = gw @ weight
            if want_w:
                grad_w.add_(gw.t() @ hc) if weight.dtype != acc else grad_w.addmm_(gw.t(), hc)
            if want_b:
                grad_b.add_(g.sum(0))
        grad_w = grad_w.to(weight.dtype) if want_w else None
        grad_b = grad_b.to(bias.dtype) if want_b else None
        return grad_h, grad_w, grad_b, None, None, None, None


def fused_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, temperature: float = 1.0, entropy: bool = False,
                         chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(algos.token_logprobs(logits, targets, T), algos.entropy_from_logits(logits, T) or None)`
    for `logits = hidden @ weight.T + bias`, hidden [..., H], targets [...], without the
    logits: `chunk` rows at a time (default `default_chunk(V)`), in float32. Differentiable
    in hidden, weight and bias (entropy too)."""
    lead = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    chunk = chunk or default_chunk(weight.shape[0])
    logp, ent = FusedLogprobs.apply(h, weight, bias, targets.reshape(-1), float(temperature), entropy, chunk)
    return logp.reshape(lead), (ent.reshape(lead) if entropy else None)
