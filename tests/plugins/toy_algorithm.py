"""A user's algorithm with its own options and its own source, written outside the packages (docs/algorithms.md)."""

from dataclasses import dataclass

import torch

from algorithms import AlgorithmBase, group_advantages, policy_loss
from launch.sources import RolloutSource


@dataclass
class SignGRPOOptions:
    scale: float = 1.0
    """Size of every advantage: +scale above the group mean, -scale below."""
    max_answer: int = 1000
    """Train only on prompts whose answer is at most this (the source's curriculum)."""


class EasyFirstSource(RolloutSource):
    """The policy's own samples, from the prompts whose answer is at most ``algorithm.max_answer``."""

    def __init__(self, cfg, algorithm, roles, rows, eval_rows):
        easy = [row for row in rows if int(row.answer) <= algorithm.options.max_answer]
        super().__init__(cfg, algorithm, roles, easy, eval_rows)
        self.kept = len(easy)

    def collect(self, step):
        collected = super().collect(step)
        collected.stats["curriculum/rows"] = self.kept
        return collected


class SignGRPO(AlgorithmBase):
    """GRPO with the sign of the group-centred score, times ``scale``, as the advantage."""

    name = "sign_grpo"
    Options = SignGRPOOptions
    source = "tests.plugins.toy_algorithm:EasyFirstSource"

    def __init__(self, cfg, options=None):
        super().__init__(cfg, options)
        self.updates = 0  # driver-side state: it reaches the learners through state_dict()

    def compute_advantages(self, batch):
        centred = group_advantages(batch.scores, batch.group_ids, norm_by_std=False)  # [B]
        batch.advantages = self.options.scale * torch.sign(centred)
        self.updates += 1
        return {"scale": self.options.scale}

    def loss(self, outputs, batch):
        loss, metrics = policy_loss(outputs["logprobs"], batch.old_logprobs, batch.advantages, batch.response_mask)
        metrics["updates_seen"] = float(self.updates)  # what this learner rank was told
        metrics["max_advantage"] = batch.advantages.abs().max().item()
        return loss, metrics

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state.get("updates", self.updates)
