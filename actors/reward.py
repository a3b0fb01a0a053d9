"""RewardWorker: runs the configured reward functions on batches of samples."""

from __future__ import annotations

from rewards import CompositeReward
from rlcore.config import RewardTermConfig


class RewardWorker:
    def __init__(self, terms: list[RewardTermConfig]):
        self.reward = CompositeReward.from_specs([(t.name, t.weight, dict(t.args)) for t in terms])

    def score(self, prompts: list[str], responses: list[str], answers: list[str]) -> tuple[list[float], dict[str, list[float]]]:
        """(weighted total per sample, unweighted value of each term per sample)."""
        return self.reward.score(prompts, responses, answers)
