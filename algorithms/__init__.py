"""RL algorithms: advantage estimators and losses (pure tensor functions)."""

from algorithms.advantages import gae, group_advantages, reinforce_pp_returns, rloo_advantages
from algorithms.losses import dpo_loss, gspo_policy_loss, policy_loss, value_loss

__all__ = [
    "group_advantages",
    "gae",
    "rloo_advantages",
    "reinforce_pp_returns",
    "policy_loss",
    "value_loss",
    "dpo_loss",
    "gspo_policy_loss",
]
