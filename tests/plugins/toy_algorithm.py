"""A user's algorithm, written outside the ``algorithms`` package (see docs/algorithms.md)."""

import torch

from algorithms import group_advantages, policy_loss
from algorithms.base import AlgorithmBase


class SignGRPO(AlgorithmBase):
    """GRPO with the sign of the group-centred score as the advantage."""

    name = "sign_grpo"

    def compute_advantages(self, batch):
        batch.advantages = torch.sign(group_advantages(batch.scores, batch.group_ids, norm_by_std=False))  # [B]

    def loss(self, logprobs, entropy, batch):
        loss, metrics = policy_loss(logprobs, batch.old_logprobs, batch.advantages, batch.response_mask)
        metrics["toy_marker"] = 1.0  # proves this class ran inside the learners
        return loss, metrics
