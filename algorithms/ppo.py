"""PPO with a critic (Schulman et al. 2017; the RLHF recipe of Ziegler et al. 2019 and Ouyang et al. 2022).

* Token-level rewards: the sample's score on its last response token, minus
  ``kl_coef`` times the k1 KL to the reference on every token. ``kl_coef`` is
  fixed, or adapted towards ``kl_target`` (Ziegler et al. 2019).
* Advantages by GAE (``gamma``, ``lam``) over the critic's values, whitened over
  the batch; returns = un-whitened advantages + values are the critic's targets.
* Clipped policy loss (with clip-higher and dual clip), clipped value loss
  (``value_clip``), separate learning rates (``learner.lr``, ``critic.lr``) and
  ``critic_warmup_steps`` during which only the critic trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.advantages import gae
from algorithms.base import AlgorithmBase
from algorithms.losses import policy_loss
from rlcore.functional import aggregate_loss, kl_penalty, masked_mean, masked_whiten

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


def adaptive_kl_coef(coef: float, kl: float, target: float, samples: int, horizon: int) -> float:
    """Ziegler et al. 2019 (arXiv:1909.08593), eq. 2: move ``coef`` by at most ±20% × samples/horizon."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return coef * (1.0 + error * samples / horizon)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """``[B, T]``: ``-kl_coef * kl`` on response tokens, plus the score on each sample's last one."""
    rewards = -kl_coef * kl * mask  # [B, T]
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


class PPO(AlgorithmBase):
    name: ClassVar[str] = "ppo"
    uses_critic: ClassVar[bool] = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.ac = cfg.algorithm
        self.kl_coef = cfg.algorithm.kl_coef

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from rlcore.config import ConfigError

        ac = cfg.algorithm
        if cfg.rollout.temperature <= 0:
            raise ConfigError(f"rollout.temperature={cfg.rollout.temperature}: PPO needs sampling, use a value > 0")
        if ac.kl_target is not None and ac.kl_target <= 0:
            raise ConfigError(f"algorithm.kl_target={ac.kl_target} must be > 0 (or null for a fixed kl_coef)")
        if ac.kl_coef > 0 and not cfg.reference.enabled:
            raise ConfigError("PPO's KL reward needs reference.enabled=true (or algorithm.kl_coef=0)")
        if ac.dynamic_sampling or ac.overlong_buffer:
            raise ConfigError("algorithm.dynamic_sampling and algorithm.overlong_buffer are GRPO options; "
                              "use algorithm.name=grpo")

    def updates_policy(self, step: int) -> bool:
        return step > self.ac.critic_warmup_steps

    def compute_advantages(self, batch: RolloutBatch) -> dict[str, float]:
        mask = batch.response_mask  # [B, T]
        kl = torch.zeros_like(mask) if batch.ref_logprobs is None else \
            kl_penalty(batch.rollout_logprobs, batch.ref_logprobs, "k1") * mask  # [B, T]
        rewards = token_rewards(batch.scores, kl, mask, self.kl_coef)  # [B, T]
        advantages, returns = gae(rewards, batch.values, mask, self.ac.gamma, self.ac.lam)  # [B, T] each
        batch.advantages = masked_whiten(advantages, mask) * mask
        batch.returns = returns * mask
        mean_kl = masked_mean(kl, mask).item()
        metrics = {"kl_coef": self.kl_coef, "reward_kl": mean_kl,
                   "returns": masked_mean(returns, mask).item(), "values": masked_mean(batch.values, mask).item()}
        if self.ac.kl_target is not None:
            self.kl_coef = adaptive_kl_coef(self.kl_coef, mean_kl, self.ac.kl_target, len(batch), self.ac.kl_horizon)
        return metrics

    def loss(self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ac, mask = self.ac, batch.response_mask
        loss, metrics = policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, clip_low=ac.clip_low,
                                    clip_high=ac.clip_high, dual_clip=ac.dual_clip, agg=ac.loss_agg)
        metrics["pg_loss"] = loss.item()
        if ac.entropy_coef > 0:
            loss = loss - ac.entropy_coef * aggregate_loss(entropy, mask, ac.loss_agg)
        if batch.ref_logprobs is not None:
            metrics["kl"] = masked_mean(kl_penalty(logprobs.detach(), batch.ref_logprobs, ac.kl_kind), mask).item()
        metrics["entropy"] = masked_mean(entropy.detach(), mask).item()
        return loss, metrics

    def state_dict(self) -> dict:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        self.kl_coef = state.get("kl_coef", self.kl_coef)
