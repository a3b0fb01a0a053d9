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
  and are dropped; the source samples more until the batch is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.advantages import (
    group_advantages,
    last_token,
    reinforce_pp_returns,
    rloo_advantages,
    zero_variance_groups,
)
from algorithms.base import Outputs
from algorithms.policy import PolicyAlgorithm, PolicyOptions
from algorithms.shaping import overlong_penalty
from rlcore.config import ConfigError

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config

ADVANTAGES = ("grpo", "rloo", "reinforce_pp")
RATIOS = ("token", "sequence")


@dataclass
class GRPOOptions(PolicyOptions):
    norm_by_std: bool = True
    """Divide group-centred scores by the group's std (GRPO). False gives Dr.GRPO."""
    advantage: str = "grpo"
    """Advantage estimator: grpo (group-normalised), rloo (leave-one-out baseline) or reinforce_pp (REINFORCE++: batch-whitened returns)."""
    ratio: str = "token"
    """Importance ratio: token (PPO/GRPO) or sequence (GSPO's length-normalised sequence ratio; use clip_low=3e-4 clip_high=4e-4)."""
    overlong_buffer: int = 0
    """DAPO overlong shaping: responses longer than rollout.max_new_tokens minus this many tokens are penalised linearly, up to overlong_penalty at the limit (0: off)."""
    overlong_penalty: float = 1.0
    """Largest overlong penalty, reached at rollout.max_new_tokens."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts until the batch is full."""
    max_sampling_rounds: int = 4
    """Most generation rounds per step under dynamic sampling; a batch still short after them is topped up with dropped groups (counted in sampling/filled_groups)."""


class GRPO(PolicyAlgorithm):
    """GRPO and its family (Dr.GRPO, DAPO, GSPO, RLOO, REINFORCE++): group-relative advantages on the policy's own samples, a clipped policy loss, KL to the reference in the loss."""

    name: ClassVar[str] = "grpo"
    Options: ClassVar[type] = GRPOOptions
    options: GRPOOptions

    @classmethod
    def validate(cls, cfg: Config, o: GRPOOptions) -> None:
        super().validate(cfg, o)
        if o.advantage not in ADVANTAGES:
            raise ConfigError(f"algorithm.advantage='{o.advantage}' is not one of {', '.join(ADVANTAGES)}")
        if o.ratio not in RATIOS:
            raise ConfigError(f"algorithm.ratio='{o.ratio}' is not one of {', '.join(RATIOS)}")
        if (o.advantage != "reinforce_pp" or o.dynamic_sampling) and cfg.rollout.n < 2:
            raise ConfigError(f"rollout.n={cfg.rollout.n}: GRPO compares samples within a group, use rollout.n >= 2")
        if cfg.rollout.temperature <= 0:
            raise ConfigError(f"rollout.temperature={cfg.rollout.temperature}: GRPO needs sampling, use a value > 0")
        if o.dual_clip is not None and o.ratio == "sequence":
            raise ConfigError("algorithm.dual_clip is for the token ratio; set algorithm.ratio=token or dual_clip=null")
        if not 0 <= o.overlong_buffer <= cfg.rollout.max_new_tokens:
            raise ConfigError(f"algorithm.overlong_buffer={o.overlong_buffer} must be in "
                              f"[0, rollout.max_new_tokens={cfg.rollout.max_new_tokens}]")
        if o.max_sampling_rounds < 1:
            raise ConfigError(f"algorithm.max_sampling_rounds={o.max_sampling_rounds} must be >= 1")

    # ---- driver side -----------------------------------------------------------------------
    def max_sampling_rounds(self) -> int:
        return self.options.max_sampling_rounds if self.options.dynamic_sampling else 1

    def shape_rewards(self, batch: RolloutBatch) -> None:
        o = self.options
        if o.overlong_buffer:
            lengths = batch.response_mask.sum(-1)  # [B]
            penalty = overlong_penalty(lengths, self.cfg.rollout.max_new_tokens, o.overlong_buffer, o.overlong_penalty)
            batch.scores = batch.scores + penalty
            batch.reward_terms["overlong"] = penalty

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        if not self.options.dynamic_sampling:
            return batch, None
        varied = zero_variance_groups(batch.scores, batch.group_ids).logical_not()  # [B]
        keep = varied.nonzero().flatten()
        drop = varied.logical_not().nonzero().flatten()
        return batch.select(keep), (batch.select(drop) if len(drop) else None)

    def compute_advantages(self, batch: RolloutBatch) -> None:
        o = self.options
        if o.advantage == "grpo":
            batch.advantages = group_advantages(batch.scores, batch.group_ids, norm_by_std=o.norm_by_std)  # [B]
        elif o.advantage == "rloo":
            batch.advantages = rloo_advantages(batch.scores, batch.group_ids)  # [B]
        else:  # reinforce_pp: the outcome reward sits on the last response token
            mask = batch.response_mask  # [B, T]
            last = last_token(mask)  # [B]
            token_rewards = torch.zeros_like(mask)
            token_rewards[torch.arange(len(batch)), last] = batch.scores
            batch.advantages, _ = reinforce_pp_returns(token_rewards, mask, gamma=1.0)  # [B, T]

    # ---- learner side ----------------------------------------------------------------------
    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy_objective(outputs, batch, sequence_ratio=self.options.ratio == "sequence")
