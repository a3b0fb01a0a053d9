"""The clipped policy objective that GRPO and PPO share, and its options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from algorithms.base import Outputs
from algorithms.losses import gspo_policy_loss, policy_loss
from rlcore.config import ConfigError
from rlcore.functional import KL_KINDS, LOSS_AGG_MODES, aggregate_loss, kl_penalty, masked_mean

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch


@dataclass
class PolicyOptions:
    clip_low: float = 0.2
    """PPO clip epsilon below 1."""
    clip_high: float = 0.2
    """PPO clip epsilon above 1 (raise it for DAPO's clip-higher)."""
    dual_clip: Optional[float] = None
    """Dual-clip constant c > 1, bounding the loss of negative-advantage tokens (None: off)."""
    kl_coef: float = 0.001
    """Weight of the KL-to-reference term in the loss (0 disables the term; the KL is still logged)."""
    kl_kind: str = "k3"
    """KL estimator: k1, k2, k3 or abs."""
    loss_agg: str = "token-mean"
    """Loss aggregation: token-mean, seq-mean-token-sum, seq-mean-token-mean or seq-mean-token-sum-norm."""
    entropy_coef: float = 0.0
    """Entropy bonus: subtracts this times the aggregated entropy from the loss."""

    def check(self, reference_enabled: bool) -> None:
        """One-line ``ConfigError`` for an option out of range (keys under ``algorithm``)."""
        if self.kl_kind not in KL_KINDS:
            raise ConfigError(f"algorithm.kl_kind='{self.kl_kind}' is not one of {', '.join(KL_KINDS)}")
        if self.loss_agg not in LOSS_AGG_MODES:
            raise ConfigError(f"algorithm.loss_agg='{self.loss_agg}' is not one of {', '.join(LOSS_AGG_MODES)}")
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} must be >= 0")
        if self.kl_coef > 0 and not reference_enabled:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} needs reference.enabled=true "
                              "(or set algorithm.kl_coef=0)")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(f"algorithm.dual_clip={self.dual_clip} must be > 1 (or null to turn it off)")


def policy_objective(o: PolicyOptions, outputs: Outputs, batch: RolloutBatch, *, sequence_ratio: bool = False,
                     kl_in_loss: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (token or GSPO sequence ratio), plus ``kl_coef``·KL and minus ``entropy_coef``·entropy."""
    logprobs, entropy, mask = outputs["logprobs"], outputs["entropy"], batch.response_mask  # [B, T] each
    if sequence_ratio:
        loss, metrics = gspo_policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask,
                                         clip_low=o.clip_low, clip_high=o.clip_high, agg=o.loss_agg)
    else:
        loss, metrics = policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, clip_low=o.clip_low,
                                    clip_high=o.clip_high, dual_clip=o.dual_clip, agg=o.loss_agg)
    metrics["pg_loss"] = loss.item()
    if batch.ref_logprobs is not None:
        kl = kl_penalty(logprobs, batch.ref_logprobs, o.kl_kind)  # [B, T]
        if kl_in_loss and o.kl_coef > 0:
            loss = loss + o.kl_coef * aggregate_loss(kl, mask, o.loss_agg)
        metrics["kl"] = masked_mean(kl.detach(), mask).item()
    if o.entropy_coef > 0:
        loss = loss - o.entropy_coef * aggregate_loss(entropy, mask, o.loss_agg)
    metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
    return loss, metrics
