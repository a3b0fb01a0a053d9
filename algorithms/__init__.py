"""RL algorithms: pure advantage and loss functions, and the algorithm plug-ins and their registry."""

from algorithms.advantages import gae, group_advantages, reinforce_pp_returns, rloo_advantages
from algorithms.base import AlgorithmBase, LearnerSpec
from algorithms.losses import dpo_loss, gspo_policy_loss, policy_loss, value_loss
from algorithms.registry import ALGORITHMS

__all__ = [
    "ALGORITHMS",
    "AlgorithmBase",
    "LearnerSpec",
    "dpo_loss",
    "gae",
    "group_advantages",
    "gspo_policy_loss",
    "policy_loss",
    "reinforce_pp_returns",
    "rloo_advantages",
    "value_loss",
]
