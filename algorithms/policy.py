"""What GRPO and PPO share: the policy's options, its old log-probs, and the clipped objective.

Old log-probs (the PPO ratio's denominator) either come from the sampler
(``batch.rollout_logprobs``: vLLM's processed log-probs, the same numbers up to
its precision) or are recomputed by the actor group under the weights before
the update, one more forward pass over the batch. Recomputing is needed when
the update goes off-policy: several mini-batches or epochs, or samples from
older weights (``rollout.max_staleness``). Truncated importance sampling
(``off_policy_correction``) then reweighs each token's loss by the recomputed
old policy over the sampler's, capped at ``is_cap`` (verl's TIS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from algorithms.base import AlgorithmBase, LearnerSpec, Outputs
from algorithms.losses import gspo_policy_loss, policy_loss
from rlcore.config import ConfigError
from rlcore.functional import IS_LEVELS, KL_KINDS, LOSS_AGG_MODES, aggregate_loss, kl_penalty, masked_mean, \
    truncated_is_weights

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config

OLD_LOGPROBS = ("auto", "recompute", "rollout")
CORRECTIONS = ("auto", "none") + IS_LEVELS


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
    old_logprobs: str = "auto"
    """Old log-probs of the PPO ratio: recompute (a forward pass of the actor before its update), rollout (the sampler's log-probs, no extra pass) or auto: rollout when the update is on-policy (learner.epochs=1, one mini-batch per step, rollout.max_staleness=0), recompute otherwise."""
    off_policy_correction: str = "auto"
    """Truncated importance sampling of the policy loss by the recomputed old log-probs over the sampler's: token, sequence, none, or auto (token when rollout.max_staleness > 0, none otherwise). Needs the old log-probs recomputed."""
    is_cap: float = 2.0
    """Upper bound of the truncated importance-sampling weights (tokens or sequences whose weight would exceed it get exactly this)."""

    def check(self, cfg: Config, recompute: bool) -> None:
        """One-line ``ConfigError`` for an option out of range (keys under ``algorithm``)."""
        if self.kl_kind not in KL_KINDS:
            raise ConfigError(f"algorithm.kl_kind='{self.kl_kind}' is not one of {', '.join(KL_KINDS)}")
        if self.loss_agg not in LOSS_AGG_MODES:
            raise ConfigError(f"algorithm.loss_agg='{self.loss_agg}' is not one of {', '.join(LOSS_AGG_MODES)}")
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} must be >= 0")
        if self.kl_coef > 0 and not cfg.reference.enabled:
            raise ConfigError(f"algorithm.kl_coef={self.kl_coef} needs reference.enabled=true "
                              "(or set algorithm.kl_coef=0)")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(f"algorithm.dual_clip={self.dual_clip} must be > 1 (or null to turn it off)")
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ConfigError(f"algorithm.old_logprobs='{self.old_logprobs}' is not one of {', '.join(OLD_LOGPROBS)}")
        if self.off_policy_correction not in CORRECTIONS:
            raise ConfigError(f"algorithm.off_policy_correction='{self.off_policy_correction}' is not one of "
                              f"{', '.join(CORRECTIONS)}")
        if self.off_policy_correction in IS_LEVELS and not recompute:
            raise ConfigError(f"algorithm.off_policy_correction={self.off_policy_correction} weighs by recomputed old "
                              "log-probs: set algorithm.old_logprobs=recompute (with old_logprobs=rollout the ratio "
                              "already compares against the sampler)")
        if self.is_cap < 1:
            raise ConfigError(f"algorithm.is_cap={self.is_cap} must be >= 1")

    def recomputes(self, cfg: Config, batch_size: int) -> bool:
        """Whether the actor recomputes the old log-probs (``old_logprobs``, ``auto`` resolved)."""
        if self.old_logprobs != "auto":
            return self.old_logprobs == "recompute"
        return not on_policy_update(cfg, batch_size)

    def correction(self, cfg: Config, recompute: bool) -> str | None:
        """The importance-sampling level in use (``off_policy_correction``, ``auto`` resolved), None when off."""
        if self.off_policy_correction == "auto":
            return "token" if recompute and cfg.rollout.max_staleness > 0 else None
        return None if self.off_policy_correction == "none" else self.off_policy_correction


def on_policy_update(cfg: Config, batch_size: int) -> bool:
    """Whether a step's update of a ``batch_size`` batch is on-policy: one epoch, one mini-batch and no staleness,
    so the learner's weights before the update are the sampler's."""
    lc = cfg.learner
    return lc.epochs == 1 and lc.mini_batch_size >= batch_size and cfg.rollout.max_staleness == 0


class PolicyAlgorithm(AlgorithmBase):
    """The base of GRPO and PPO: the ``actor`` group and its clipped objective."""

    Options: ClassVar[type] = PolicyOptions
    options: PolicyOptions

    def __init__(self, cfg: Config, options: PolicyOptions | None = None):
        super().__init__(cfg, options)
        self.recompute = self.options.recomputes(cfg, cfg.data.prompts_per_step * self.group_size())
        self.is_level = self.options.correction(cfg, self.recompute)

    @classmethod
    def validate(cls, cfg: Config, o: PolicyOptions) -> None:
        o.check(cfg, o.recomputes(cfg, cfg.data.prompts_per_step * cfg.rollout.n))

    def learners(self) -> dict[str, LearnerSpec]:
        """The policy; it recomputes its log-probs before the update as ``old_logprobs`` only when needed."""
        provides = {"old_logprobs": "logprobs"} if self.recompute else {}
        return {"actor": LearnerSpec("causal_lm", self.cfg.learner, provides=provides)}

    def policy_objective(self, outputs: Outputs, batch: RolloutBatch, *, sequence_ratio: bool = False,
                         kl_in_loss: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped surrogate (token or GSPO sequence ratio), plus ``kl_coef``·KL and minus ``entropy_coef``·entropy.

        The ratio's denominator is ``batch.old_logprobs`` when recomputed, else
        ``batch.rollout_logprobs``; with a correction, each token's loss is
        weighted by ``truncated_is_weights(old, rollout)`` (metrics ``is/…``).
        """
        o = self.options
        logprobs, entropy, mask = outputs["logprobs"], outputs["entropy"], batch.response_mask  # [B, T] each
        old = batch.old_logprobs if self.recompute else batch.rollout_logprobs  # [B, T]
        weights, metrics = None, {}
        if self.is_level is not None:
            weights, is_metrics = truncated_is_weights(old, batch.rollout_logprobs, mask, self.is_level, o.is_cap)
            metrics.update({f"is/{k}": v for k, v in is_metrics.items()})
        if sequence_ratio:
            loss, pg_metrics = gspo_policy_loss(logprobs, old, batch.advantages, mask, clip_low=o.clip_low,
                                                clip_high=o.clip_high, agg=o.loss_agg, weights=weights)
        else:
            loss, pg_metrics = policy_loss(logprobs, old, batch.advantages, mask, clip_low=o.clip_low,
                                           clip_high=o.clip_high, dual_clip=o.dual_clip, agg=o.loss_agg,
                                           weights=weights)
        metrics.update(pg_metrics)
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
