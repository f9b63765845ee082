"""On-policy distillation: per-token advantages from a teacher's log-probs of the student's samples.

Agarwal et al. 2024 (GKD, arXiv 2306.13649) and Thinking Machines' "On-Policy Distillation"
(Lu et al., Oct 2025): the student samples, a teacher scores every sampled token, and the
per-token reverse KL, log pi_S(y_t) - log pi_T(y_t), is a penalty. As an advantage:

    A_t = reward_weight * A_seq + coef * (log pi_T(y_t) - log pi_S_old(y_t))

where A_seq is the verifier's sequence advantage (0 weight: the teacher alone) and
pi_S_old the sampling (behaviour) policy, so the policy-gradient loss on top (`ppo_clip`,
`cispo` or `sapo`, which take [B, T] advantages) minimises the reverse KL to the teacher on
the student's own samples: E[d log pi_S * (log pi_S - log pi_T)] is its gradient.
Departures: the advantage uses the trainer's behaviour log-probs (`old_logp`, as every loss
here does), not the engine's sampling log-probs; discount 0 (each token its own
reverse-KL term, as in Thinking Machines' recipe), no future-token sum.
"""

from __future__ import annotations

import torch

from rlvr.algos.losses import _adv_at, per_token


def distill_advantages(advantages: torch.Tensor, teacher_logp: torch.Tensor, student_logp: torch.Tensor, *,
                       coef: float = 1.0, reward_weight: float = 0.0) -> torch.Tensor:
    """[B, T] per-token advantages: `reward_weight` x the verifier's `advantages` ([B], broadcast,
    or [B, T]) plus `coef` x (teacher - student) log-probs [B, T] (the student's detached)."""
    return reward_weight * per_token(advantages, student_logp) + coef * (teacher_logp - student_logp.detach())


def distill_advantages_reference(advantages, teacher_logp, student_logp, *, coef=1.0, reward_weight=0.0):
    """Token-by-token loop version of `distill_advantages` (float64)."""
    out = torch.zeros(student_logp.shape, dtype=torch.float64)
    for b in range(student_logp.shape[0]):
        for t in range(student_logp.shape[1]):
            out[b, t] = (reward_weight * _adv_at(advantages, b, t)
                         + coef * (teacher_logp[b, t].item() - student_logp[b, t].item()))
    return out
