"""PPO with a critic (Schulman et al. 2017; the RLHF recipe of Ziegler et al. 2019 and Ouyang et al. 2022).

* Token-level rewards: the sample's score on its last response token, minus
  ``kl_coef`` times the k1 KL to the reference on every token. ``kl_coef`` is
  fixed, or adapted towards ``kl_target`` (Ziegler et al. 2019).
* Advantages by GAE (``gamma``, ``lam``) over the critic's values, whitened over
  the batch; returns = un-whitened advantages + values are the critic's targets.
* Two learner groups: the critic (a value head on the policy's architecture,
  its settings under ``algorithm.critic``), trained first with a clipped value
  loss (``value_clip``), then the policy (``actor``, settings under ``learner``)
  with the clipped policy loss, after ``critic_warmup_steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from algorithms.advantages import gae, last_token
from algorithms.base import LearnerSpec, Outputs
from algorithms.losses import value_loss
from algorithms.policy import PolicyAlgorithm, PolicyOptions
from rlcore.config import ConfigError, LearnerConfig, validate_learner
from rlcore.functional import kl_penalty, masked_mean, masked_whiten

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
    last = last_token(mask)  # [B]
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


@dataclass
class PPOOptions(PolicyOptions):
    kl_coef: float = 0.001
    """Weight of the k1 KL to the reference in the token rewards (0: off; the KL is still logged). The start value when kl_target is set."""
    kl_kind: str = "k3"
    """KL estimator of the logged actor/kl only (k1, k2, k3 or abs): the KL in PPO's token rewards (algorithm/reward_kl) is always k1, log π_rollout − log π_ref per token, whatever this says."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 1.0
    """GAE lambda."""
    value_clip: float = 0.5
    """Value clipping range around the old values."""
    critic_warmup_steps: int = 0
    """Steps in which only the critic trains (the policy and its weights stay fixed)."""
    kl_target: Optional[float] = None
    """Target KL per token for the adaptive KL coefficient (Ziegler et al. 2019); None keeps kl_coef fixed."""
    kl_horizon: int = 10000
    """Horizon, in samples, of the adaptive KL controller."""
    critic: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=1e-4))
    """The critic's learner group: the same fields as ``learner`` (world_size, lr, mini_batch_size, …)."""
    critic_path: Optional[str] = None
    """Initial weights of the critic (a Hugging Face folder of the same architecture). None: the policy's weights, with a new value head."""


class PPO(PolicyAlgorithm):
    """PPO with a critic: GAE over a value model (its own learner group, ``critic``), KL-penalised token rewards, clipped policy and value losses."""

    name: ClassVar[str] = "ppo"
    Options: ClassVar[type] = PPOOptions
    options: PPOOptions

    def __init__(self, cfg: Config, options: PPOOptions | None = None):
        super().__init__(cfg, options)
        self.kl_coef = self.options.kl_coef

    @classmethod
    def validate(cls, cfg: Config, o: PPOOptions) -> None:
        super().validate(cfg, o)
        validate_learner(o.critic, "algorithm.critic")
        if cfg.rollout.temperature <= 0:
            raise ConfigError(f"rollout.temperature={cfg.rollout.temperature}: PPO needs sampling, use a value > 0")
        if o.kl_target is not None and o.kl_target <= 0:
            raise ConfigError(f"algorithm.kl_target={o.kl_target} must be > 0 (or null for a fixed kl_coef)")

    def learners(self) -> dict[str, LearnerSpec]:
        critic = LearnerSpec("value", self.options.critic, settings_key="algorithm.critic", loss="critic_loss",
                             provides={"values": "values"}, model_path=self.options.critic_path)
        return {"critic": critic, **super().learners()}

    def trains(self, group: str, step: int) -> bool:
        return group == "critic" or step > self.options.critic_warmup_steps

    def compute_advantages(self, batch: RolloutBatch) -> dict[str, float]:
        o, mask = self.options, batch.response_mask  # [B, T]
        kl = torch.zeros_like(mask) if batch.ref_logprobs is None else \
            kl_penalty(batch.rollout_logprobs, batch.ref_logprobs, "k1") * mask  # [B, T]
        rewards = token_rewards(batch.scores, kl, mask, self.kl_coef)  # [B, T]
        advantages, returns = gae(rewards, batch.values, mask, o.gamma, o.lam)  # [B, T] each
        batch.advantages = masked_whiten(advantages, mask) * mask
        batch.returns = returns * mask
        mean_kl = masked_mean(kl, mask).item()
        metrics = {"kl_coef": self.kl_coef, "reward_kl": mean_kl,
                   "returns": masked_mean(returns, mask).item(), "values": masked_mean(batch.values, mask).item()}
        if o.kl_target is not None:
            self.kl_coef = adaptive_kl_coef(self.kl_coef, mean_kl, o.kl_target, len(batch), o.kl_horizon)
        return metrics

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy_objective(outputs, batch, kl_in_loss=False)  # the KL is in the rewards

    def critic_loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped value regression onto ``batch.returns`` (``batch.values`` are the old values)."""
        values, mask = outputs["values"], batch.response_mask  # [B, T]
        loss, metrics = value_loss(values, batch.values, batch.returns, mask, clip=self.options.value_clip,
                                   agg=self.options.loss_agg)
        metrics["value_loss"] = loss.item()
        metrics["values"] = masked_mean(values.detach(), mask).item()
        return loss, metrics

    def state_dict(self) -> dict:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        self.kl_coef = state.get("kl_coef", self.kl_coef)
