"""RL algorithms: pure advantage and loss functions, and the algorithm plug-ins and their registry."""

from algorithms.advantages import gae, group_advantages, reinforce_pp_returns, rloo_advantages
from algorithms.losses import dpo_loss, gspo_policy_loss, policy_loss, value_loss
from algorithms.registry import ALGORITHMS, get_algorithm_class, register

__all__ = [
    "group_advantages",
    "gae",
    "rloo_advantages",
    "reinforce_pp_returns",
    "policy_loss",
    "value_loss",
    "dpo_loss",
    "gspo_policy_loss",
    "ALGORITHMS",
    "get_algorithm_class",
    "register",
]
