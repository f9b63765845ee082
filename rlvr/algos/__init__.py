"""RL algorithms as pure tensor functions: advantages, policy losses, rollout corrections, KL, aggregation.

No Ray, no config objects: tensors in, tensors out. Variants live in plain dicts
(`ADVANTAGES`, `TOKEN_ADVANTAGES`, `WHITENING`, `POLICY_LOSSES`, `CORRECTIONS`, `AGGREGATIONS`, `KL`) with one signature each, and
every call site goes through the dicts. Each fast function has a slow loop
`*_reference` beside it; the unit tests check that the two agree.

Where we depart from the papers:
- GRPO (Shao et al. 2024): population std (unbiased=False) plus eps, as verl and TRL do.
- No KL term by default (beta = 0, as DAPO / Dr. GRPO do); `KL` holds k1/k2/k3 if a caller adds one.
- Default aggregation is `token_mean` (DAPO), not GRPO's per-sequence mean (`seq_mean_token_mean`).
- Dr. GRPO (Liu et al. 2025): `seq_mean_token_sum_norm` divides by a fixed `max_tokens`, as in the paper.
- RLOO (Ahmadian et al. 2024): baseline = mean of the other k-1 samples, as in the paper; no std scaling.
- REINFORCE++: we implement "REINFORCE++-baseline" (group-mean baseline, then whole-batch std);
  the original REINFORCE++ has no group baseline, only global batch normalisation.
- GSPO (Zheng et al. 2025): the paper's GSPO-token form, sg[s_i] * pi/sg[pi]; see `gspo_loss`.
- `nll` is not from an RL paper: -A * logp, supervised fine-tuning with A = 1 (`rlvr sft`), the
  unclipped policy gradient with RL advantages.
- CISPO (MiniMax-M1), GMPO, SAPO: see `cispo_loss`, `gmpo_loss`, `sapo_loss` for the equations
  and their defaults; GMPO uses the GSPO-token trick for its sequence ratio.
- Rollout corrections (TIS, token/sequence MIS, IcePop): see `corrections`; a masked token
  stays in the loss normaliser with weight 0.
- On-policy distillation (GKD; Thinking Machines 2025): per-token reverse-KL advantages, see `distill`.
- The ratio uses the trainer's own log-probs of the behaviour policy (`old_logp`), not
  the engine's sampling log-probs; `CORRECTIONS` correct for that gap when a caller asks.

- PPO with a critic (GAE, the clipped value loss, whitening): see `values` (observation tokens
  are skipped, not terminal).

Layout: advantages.py, losses.py, corrections.py, aggregation.py, kl.py, logprobs.py,
shaping.py, distill.py, values.py; this package re-exports their public names (`from rlvr.algos import X`).
"""

from rlvr.algos.advantages import (ADVANTAGES, GROUP_ADVANTAGES, dr_grpo_advantages, dr_grpo_advantages_reference,
                                   grpo_advantages, grpo_advantages_reference, reinforce_pp_advantages,
                                   reinforce_pp_advantages_reference, rloo_advantages, rloo_advantages_reference,
                                   uniform_groups)
from rlvr.algos.aggregation import AGGREGATIONS, Aggregation, aggregate, aggregate_reference, normaliser
from rlvr.algos.corrections import (CORRECTIONS, correction_reference, correction_sums, icepop_correction,
                                    mis_seq_correction, mis_token_correction, tis_correction, tis_weights,
                                    tis_weights_reference)
from rlvr.algos.distill import distill_advantages, distill_advantages_reference
from rlvr.algos.kl import KL, kl_k1, kl_k2, kl_k3, kl_reference
from rlvr.algos.logprobs import entropy_for_logging, entropy_from_logits, entropy_reference, token_logprobs
from rlvr.algos.losses import (POLICY_LOSSES, cispo_loss, cispo_loss_reference, gmpo_loss, gmpo_loss_reference,
                               gspo_loss, gspo_loss_reference, nll_loss, nll_loss_reference, ppo_clip_loss,
                               ppo_clip_loss_reference, sapo_loss, sapo_loss_reference)
from rlvr.algos.shaping import overlong_penalty, overlong_penalty_reference
from rlvr.algos.values import (TOKEN_ADVANTAGES, WHITENING, explained_variance, explained_variance_reference,
                               gae_advantages, gae_advantages_reference, terminal_rewards, value_loss,
                               value_loss_reference, whiten_reference)

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "Aggregation", "CORRECTIONS", "GROUP_ADVANTAGES", "KL", "POLICY_LOSSES",
    "aggregate", "aggregate_reference", "cispo_loss", "cispo_loss_reference", "correction_reference",
    "correction_sums", "distill_advantages", "distill_advantages_reference", "dr_grpo_advantages", "dr_grpo_advantages_reference", "entropy_for_logging",
    "entropy_from_logits", "entropy_reference", "gmpo_loss", "gmpo_loss_reference", "grpo_advantages",
    "grpo_advantages_reference", "gspo_loss", "gspo_loss_reference", "icepop_correction", "kl_k1", "kl_k2", "kl_k3",
    "kl_reference", "mis_seq_correction", "mis_token_correction", "nll_loss", "nll_loss_reference", "normaliser",
    "overlong_penalty",
    "overlong_penalty_reference", "ppo_clip_loss", "ppo_clip_loss_reference", "reinforce_pp_advantages",
    "reinforce_pp_advantages_reference", "rloo_advantages", "rloo_advantages_reference", "sapo_loss",
    "sapo_loss_reference", "tis_correction", "tis_weights", "tis_weights_reference", "token_logprobs",
    "uniform_groups", "TOKEN_ADVANTAGES", "WHITENING", "explained_variance", "explained_variance_reference",
    "gae_advantages", "gae_advantages_reference", "terminal_rewards", "value_loss", "value_loss_reference",
    "whiten_reference",
]
