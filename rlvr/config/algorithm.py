"""The `algorithm` section: advantages, policy loss, aggregation, KL and the DAPO extras,
plus the papers' presets (`algorithm.preset`).

The choice types list the names of `rlvr.algos`' registries (a unit test checks they are
the same), so that loading a recipe never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from rlvr.config.checks import require

Advantage = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "gae"]  # rlvr.algos.ADVANTAGES + TOKEN_ADVANTAGES
PolicyLoss = Literal["ppo_clip", "gspo", "cispo", "gmpo", "sapo", "nll"]  # rlvr.algos.POLICY_LOSSES
Correction = Literal["none", "tis", "mis_token", "mis_seq", "icepop"]  # "none" + rlvr.algos.CORRECTIONS
Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]  # rlvr.algos.AGGREGATIONS
KLEstimator = Literal["k1", "k2", "k3"]  # rlvr.algos.KL
Preset = Literal["grpo", "dr_grpo", "dapo", "cispo", "gmpo", "sapo", "ppo", "distill"]  # PRESETS
Whitening = Literal["none", "batch", "group"]  # rlvr.algos.WHITENING
TOKEN_ADVANTAGE_LOSSES = ("ppo_clip", "cispo", "sapo", "nll")  # rlvr.algos.losses.TOKEN_ADVANTAGE_LOSSES
# advantages that compare a sample with the rest of its group (need group size >= 2); rlvr.algos.GROUP_ADVANTAGES
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp")


@dataclass
class KLConfig:
    coef: float = 0.0  # 0: no reference model is loaded at all
    estimator: KLEstimator = "k3"
    where: Literal["loss", "reward"] = "loss"  # loss: coef * KL per token in the loss; reward: coef * sum KL off the reward


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling: drop all-equal groups, sample more prompts until the batch is full."""

    enabled: bool = False
    max_rounds: int = 3  # extra generate rounds per step at most


@dataclass
class OverlongConfig:
    """DAPO's soft overlong punishment over the last `cache_len` tokens before rollout.max_tokens."""

    enabled: bool = False
    cache_len: int = 4
    weight: float = 1.0


@dataclass
class GAEConfig:
    """`advantage: gae` (PPO with a critic, the `critic` section): per-token GAE from the critic's values."""

    gamma: float = 1.0
    lam: float = 0.95  # GAE's lambda
    whiten: Whitening = "batch"  # advantages to mean 0, std 1 over the batch's tokens, each group's, or not at all


@dataclass
class AlgorithmConfig:
    # grpo | dr_grpo | dapo | cispo | gmpo | sapo | ppo | distill: the paper's settings (PRESETS)
    preset: Optional[Preset] = None
    advantage: Advantage = "grpo"
    advantage_eps: float = 1e-6
    loss: PolicyLoss = "ppo_clip"
    # ppo_clip, gspo: ratio clip 1-low..1+high; cispo: the IS weight's clip, same form; gmpo: log-ratio clip -low..high
    clip_low: float = 0.2
    clip_high: float = 0.2
    tau_pos: float = 1.0  # sapo: gate temperature for tokens with A > 0
    tau_neg: float = 1.05  # sapo: gate temperature for A <= 0
    dual_clip: Optional[float] = None  # dual-clip constant (> 1) for negative advantages
    aggregation: Aggregation = "token_mean"
    norm_tokens: Optional[int] = None  # seq_mean_token_sum_norm's constant; default rollout.max_tokens
    kl: KLConfig = field(default_factory=KLConfig)
    tis_cap: Optional[float] = None  # truncated importance sampling cap for engine/trainer mismatch (selects tis)
    # engine/trainer mismatch correction; null: "tis" if tis_cap is set (the async default does), else "none"
    correction: Optional[Correction] = None
    correction_low: Optional[float] = None  # mis_token/mis_seq/icepop band's low end; null: the mode's default
    correction_high: Optional[float] = None  # the band's high end (tis: the cap, else tis_cap); null: default
    correction_seq_ratio: Literal["geo_mean", "product"] = "geo_mean"  # mis_seq: the sequence's ratio
    entropy_coef: float = 0.0  # entropy bonus (0: entropy is only logged)
    # on-policy distillation (rlvr.algos.distill): per-token advantage coef * (teacher - student) log-prob
    # plus reward_weight * the verifier's advantage; > 0 needs teacher.path
    distill_coef: float = 0.0
    reward_weight: float = 1.0
    skip_uniform_groups: bool = True  # don't train on groups whose rewards are all equal (zero advantage)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)
    gae: GAEConfig = field(default_factory=GAEConfig)

    def check(self) -> None:
        require(self.kl.coef >= 0, "algorithm.kl.coef", "must be >= 0")
        require(self.dual_clip is None or self.dual_clip > 1, "algorithm.dual_clip", "must be > 1 (or null)")
        require(self.tis_cap is None or self.tis_cap > 0, "algorithm.tis_cap", "must be > 0 (or null)")
        require(self.norm_tokens is None or self.norm_tokens >= 1, "algorithm.norm_tokens", "must be >= 1")
        require(self.dynamic_sampling.max_rounds >= 0, "algorithm.dynamic_sampling.max_rounds", "must be >= 0")
        require(self.clip_low >= 0 and self.clip_high >= 0, "algorithm.clip_low", "clip ranges must be >= 0")
        require(self.distill_coef >= 0, "algorithm.distill_coef", "must be >= 0")
        require(not self.distill_coef or self.loss in TOKEN_ADVANTAGE_LOSSES, "algorithm.loss",
                f"distillation gives tokens their own advantages: use one of {', '.join(TOKEN_ADVANTAGE_LOSSES)}")
        require(self.tau_pos > 0 and self.tau_neg > 0, "algorithm.tau_pos", "SAPO temperatures must be > 0")
        low, high = self.correction_low, self.correction_high
        require(low is None or low >= 0, "algorithm.correction_low", "must be >= 0 (or null)")
        require(high is None or high > 0, "algorithm.correction_high", "must be > 0 (or null)")
        require(low is None or high is None or low <= high, "algorithm.correction_low", "must be <= correction_high")
        require(0 <= self.gae.gamma <= 1, "algorithm.gae.gamma", "must be in [0, 1]")
        require(0 <= self.gae.lam <= 1, "algorithm.gae.lam", "must be in [0, 1]")
        require(not (self.advantage == "gae" and self.loss in ("gspo", "gmpo")), "algorithm.loss",
                f"{self.loss!r} weighs whole sequences: with per-token GAE advantages use ppo_clip, cispo or sapo")

    def correction_mode(self) -> str:
        """The correction the trainer applies: `correction`, or "tis" when only `tis_cap` is set."""
        if self.correction is not None:
            return self.correction
        return "tis" if self.tis_cap else "none"

    def correction_options(self) -> dict:
        """Keyword arguments for `rlvr.algos.CORRECTIONS[mode]`; None leaves the mode's default."""
        high = self.correction_high
        if self.correction_mode() == "tis" and high is None:
            high = self.tis_cap
        return {"low": self.correction_low, "high": high, "seq_ratio": self.correction_seq_ratio}

    def loss_options(self) -> dict:
        """Keyword arguments for `rlvr.algos.POLICY_LOSSES[loss]` (each loss reads the ones it knows)."""
        return {"clip_low": self.clip_low, "clip_high": self.clip_high, "dual_clip": self.dual_clip,
                "tau_pos": self.tau_pos, "tau_neg": self.tau_neg}


# Async rollouts (rollout.max_staleness >= 1) train on samples from the previous weights;
# unless the recipe sets algorithm.tis_cap, truncated importance sampling corrects for it.
# Measured on the default recipe, 40 steps, seed 0: held-out accuracy 0.393 -> 0.470 without
# the correction, -> 0.567 with cap 2 (0.633 on-policy).
ASYNC_TIS_CAP = 2.0

# The papers' settings; a recipe's own algorithm keys override them.
PRESETS: dict[str, dict] = {
    # DeepSeekMath (Shao et al. 2024): group-normalised advantage, per-sequence mean, k3 KL in the loss (beta 0.04)
    "grpo": {"advantage": "grpo", "loss": "ppo_clip", "aggregation": "seq_mean_token_mean",
             "clip_low": 0.2, "clip_high": 0.2, "kl": {"coef": 0.04, "estimator": "k3", "where": "loss"}},
    # Dr. GRPO (Liu et al. 2025): no std normalisation, token sums over a constant, no KL
    "dr_grpo": {"advantage": "dr_grpo", "loss": "ppo_clip", "aggregation": "seq_mean_token_sum_norm",
                "clip_low": 0.2, "clip_high": 0.2, "kl": {"coef": 0.0}},
    # DAPO (Yu et al. 2025): clip-higher, dynamic sampling, token-level loss, overlong shaping, no KL
    "dapo": {"advantage": "grpo", "loss": "ppo_clip", "aggregation": "token_mean", "clip_low": 0.2,
             "clip_high": 0.28, "kl": {"coef": 0.0}, "dynamic_sampling": {"enabled": True},
             "overlong": {"enabled": True}},
    # CISPO (MiniMax-M1, arXiv 2506.13585): clipped, detached IS weight times A*logp, token-level
    # normalisation; no lower bound (clip_low 1 -> bound 0), clip_high 0.28 (our choice: the paper
    # does not give it); no KL
    "cispo": {"advantage": "grpo", "loss": "cispo", "aggregation": "token_mean", "clip_low": 1.0,
              "clip_high": 0.28, "kl": {"coef": 0.0}},
    # GMPO (arXiv 2507.20673): geometric-mean ratio, token log-ratios clipped to (-0.4, 0.4),
    # 1/G mean over sequences; no KL
    "gmpo": {"advantage": "grpo", "loss": "gmpo", "aggregation": "seq_mean_token_mean", "clip_low": 0.4,
             "clip_high": 0.4, "kl": {"coef": 0.0}},
    # SAPO (arXiv 2511.20347): soft gate (4/tau) sigmoid(tau (r - 1)), tau_pos 1.0, tau_neg 1.05,
    # per-sequence token mean as in its objective; no KL
    "sapo": {"advantage": "grpo", "loss": "sapo", "aggregation": "seq_mean_token_mean", "tau_pos": 1.0,
             "tau_neg": 1.05, "kl": {"coef": 0.0}},
    # PPO with a critic (Schulman et al. 2017; the RLHF form of Ouyang et al. 2022): per-token GAE
    # (gamma 1, lambda 0.95 as verl/OpenRLHF's defaults) from a value model (the `critic` section),
    # advantages whitened over the batch, clipped surrogate, token-mean; every group trains (a critic
    # learns from uniform groups too); no KL (the `critic` section holds value_clip and warm-up)
    "ppo": {"advantage": "gae", "loss": "ppo_clip", "aggregation": "token_mean", "clip_low": 0.2,
            "clip_high": 0.2, "kl": {"coef": 0.0}, "skip_uniform_groups": False,
            "gae": {"gamma": 1.0, "lam": 0.95, "whiten": "batch"}},
    # On-policy distillation (GKD, arXiv 2306.13649; Thinking Machines 2025): every sampled token's
    # advantage is the teacher's minus the student's log-prob (reverse KL), no verifier signal
    # (reward_weight 0: set it > 0 to mix the verifier's advantage in), every group trained
    # (uniform rewards still carry the teacher's signal), token-level mean; needs teacher.path
    "distill": {"advantage": "grpo", "loss": "ppo_clip", "aggregation": "token_mean", "kl": {"coef": 0.0},
                "distill_coef": 1.0, "reward_weight": 0.0, "skip_uniform_groups": False},
}
