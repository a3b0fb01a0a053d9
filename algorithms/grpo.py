"""GRPO and its family, as options of one plug-in.

* GRPO (Shao et al. 2024, DeepSeekMath): per prompt, ``rollout.n`` samples form
  a group; a sample's advantage is its score minus the group mean, over the
  group's unbiased std. Every response token shares it.
* Dr.GRPO (Liu et al. 2025): ``algorithm.norm_by_std=false`` skips the division.
* RLOO (Ahmadian et al. 2024) and REINFORCE++ (Hu 2025): ``algorithm.advantage``.
* PPO clipping with DAPO's clip-higher (``clip_low``/``clip_high``) and dual clip
  (Ye et al. 2020, ``dual_clip``); GSPO's sequence-level ratio (``ratio=sequence``).
* KL to the frozen reference in the loss (k1/k2/k3/abs) and an entropy bonus.
* DAPO's overlong shaping (``overlong_buffer``) and dynamic sampling
  (``dynamic_sampling``): groups whose rewards are all equal carry no signal
  and are dropped; the driver samples more until the batch is full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.advantages import group_advantages, reinforce_pp_returns, rloo_advantages, zero_variance_groups
from algorithms.base import AlgorithmBase
from algorithms.losses import gspo_policy_loss, policy_loss
from algorithms.shaping import overlong_penalty
from rlcore.functional import aggregate_loss, kl_penalty, masked_mean

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config

ADVANTAGES = ("grpo", "rloo", "reinforce_pp")
RATIOS = ("token", "sequence")


class GRPO(AlgorithmBase):
    name: ClassVar[str] = "grpo"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.ac, self.max_new_tokens = cfg.algorithm, cfg.rollout.max_new_tokens

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from rlcore.config import ConfigError

        ac = cfg.algorithm
        if ac.advantage not in ADVANTAGES:
            raise ConfigError(f"algorithm.advantage='{ac.advantage}' is not one of {', '.join(ADVANTAGES)}")
        if ac.ratio not in RATIOS:
            raise ConfigError(f"algorithm.ratio='{ac.ratio}' is not one of {', '.join(RATIOS)}")
        if (ac.advantage != "reinforce_pp" or ac.dynamic_sampling) and cfg.rollout.n < 2:
            raise ConfigError(f"rollout.n={cfg.rollout.n}: GRPO compares samples within a group, use rollout.n >= 2")
        if cfg.rollout.temperature <= 0:
            raise ConfigError(f"rollout.temperature={cfg.rollout.temperature}: GRPO needs sampling, use a value > 0")
        if ac.dual_clip is not None and ac.dual_clip <= 1:
            raise ConfigError(f"algorithm.dual_clip={ac.dual_clip} must be > 1 (or null to turn it off)")
        if ac.dual_clip is not None and ac.ratio == "sequence":
            raise ConfigError("algorithm.dual_clip is for the token ratio; set algorithm.ratio=token or dual_clip=null")
        if not 0 <= ac.overlong_buffer <= cfg.rollout.max_new_tokens:
            raise ConfigError(f"algorithm.overlong_buffer={ac.overlong_buffer} must be in "
                              f"[0, rollout.max_new_tokens={cfg.rollout.max_new_tokens}]")
        if ac.max_sampling_rounds < 1:
            raise ConfigError(f"algorithm.max_sampling_rounds={ac.max_sampling_rounds} must be >= 1")

    # ---- driver side -----------------------------------------------------------------------
    def shape_rewards(self, batch: RolloutBatch) -> None:
        if self.ac.overlong_buffer:
            lengths = batch.response_mask.sum(-1)  # [B]
            penalty = overlong_penalty(lengths, self.max_new_tokens, self.ac.overlong_buffer, self.ac.overlong_penalty)
            batch.scores = batch.scores + penalty
            batch.reward_terms["overlong"] = penalty

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        if not self.ac.dynamic_sampling:
            return batch, None
        varied = zero_variance_groups(batch.scores, batch.group_ids).logical_not()  # [B]
        keep = varied.nonzero().flatten()
        drop = varied.logical_not().nonzero().flatten()
        return batch.select(keep), (batch.select(drop) if len(drop) else None)

    def compute_advantages(self, batch: RolloutBatch) -> None:
        if self.ac.advantage == "grpo":
            batch.advantages = group_advantages(batch.scores, batch.group_ids, norm_by_std=self.ac.norm_by_std)  # [B]
        elif self.ac.advantage == "rloo":
            batch.advantages = rloo_advantages(batch.scores, batch.group_ids)  # [B]
        else:  # reinforce_pp: the outcome reward sits on the last response token
            mask = batch.response_mask  # [B, T]
            last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
            token_rewards = torch.zeros_like(mask)
            token_rewards[torch.arange(len(batch)), last] = batch.scores
            batch.advantages, _ = reinforce_pp_returns(token_rewards, mask, gamma=1.0)  # [B, T]

    # ---- learner side ----------------------------------------------------------------------
    def loss(self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ac, mask = self.ac, batch.response_mask  # [B, T]
        if ac.ratio == "sequence":
            loss, metrics = gspo_policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask,
                                             clip_low=ac.clip_low, clip_high=ac.clip_high, agg=ac.loss_agg)
        else:
            loss, metrics = policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, clip_low=ac.clip_low,
                                        clip_high=ac.clip_high, dual_clip=ac.dual_clip, agg=ac.loss_agg)
        metrics["pg_loss"] = loss.item()
        if batch.ref_logprobs is not None:
            kl = kl_penalty(logprobs, batch.ref_logprobs, ac.kl_kind)  # [B, T]
            if ac.kl_coef > 0:
                loss = loss + ac.kl_coef * aggregate_loss(kl, mask, ac.loss_agg)
            metrics["kl"] = masked_mean(kl.detach(), mask).item()
        if ac.entropy_coef > 0:
            loss = loss - ac.entropy_coef * aggregate_loss(entropy, mask, ac.loss_agg)
        metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
        return loss, metrics

