"""GRPO: group-relative advantages with a PPO-clipped loss (Shao et al. 2024, DeepSeekMath).

Per prompt, ``rollout.n`` samples form a group. Each sample's advantage is its
score minus the group mean, divided by the group's unbiased std (Dr.GRPO,
``algorithm.norm_by_std=false``, skips the division). Every response token
shares its sample's advantage. The loss is the clipped surrogate, plus
``kl_coef`` times a KL estimate against the frozen reference, aggregated with
``algorithm.loss_agg``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.advantages import group_advantages
from algorithms.losses import policy_loss
from rlcore.functional import aggregate_loss, kl_penalty, masked_mean

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


class GRPO:
    name: ClassVar[str] = "grpo"

    def __init__(self, cfg: Config):
        self.cfg = cfg.algorithm

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from rlcore.config import ConfigError

        if cfg.rollout.n < 2:
            raise ConfigError(f"rollout.n={cfg.rollout.n}: GRPO compares samples within a group, use rollout.n >= 2")
        if cfg.rollout.temperature <= 0:
            raise ConfigError(f"rollout.temperature={cfg.rollout.temperature}: GRPO needs sampling, use a value > 0")

    def compute_advantages(self, batch: RolloutBatch) -> None:
        batch.advantages = group_advantages(batch.scores, batch.group_ids, norm_by_std=self.cfg.norm_by_std)  # [B]

    def loss(self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch.response_mask  # [B, T]
        loss, metrics = policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask,
                                    clip_low=self.cfg.clip_low, clip_high=self.cfg.clip_high, agg=self.cfg.loss_agg)
        metrics["pg_loss"] = loss.item()
        if batch.ref_logprobs is not None:
            kl = kl_penalty(logprobs, batch.ref_logprobs, self.cfg.kl_kind)  # [B, T]
            if self.cfg.kl_coef > 0:
                loss = loss + self.cfg.kl_coef * aggregate_loss(kl, mask, self.cfg.loss_agg)
            metrics["kl"] = masked_mean(kl.detach(), mask).item()
        metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
        return loss, metrics
