"""Learned reward models, trained on the FSDP learners and served as reward terms (``rewards.reward_model``).

Both train the learner group ``actor`` of model kind ``reward`` (``actors.models.RewardModel``: the causal LM
with a one-output head per token, the head new), which is exported at the end of training with its tokenizer.
Inputs are encoded by ``rlcore.reward_inputs`` (the rendered prompt, then the response cut into steps, each
encoded on its own) in training and in serving alike; a step's score is the head's output at its last token.

* ``orm`` (outcome reward model, source ``reward_pairs``): preference pairs ``{prompt, chosen, rejected}``,
  the response one step, trained with the Bradley-Terry loss on the score at each response's last token
  (Ouyang et al. 2022). A pair is a group of two samples, chosen first, kept whole like DPO's.
* ``prm`` (process reward model, source ``step_labels``): responses cut into steps with a label per step
  (``launch.label_steps``), trained with the binary cross-entropy of each step's score against its label,
  hard (Lightman et al. 2023) or soft (Math-Shepherd, Wang et al. 2023).

Neither compares against a reference policy: run them with ``reference.enabled=false`` (the presets do), or a
reference worker computes log-probs nobody reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.base import AlgorithmBase, LearnerSpec, Outputs, check_pairs_whole
from algorithms.losses import bradley_terry_loss, step_label_loss
from rlcore.config import ConfigError
from rlcore.functional import masked_mean, masked_sum

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


def final_scores(scores: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: each response's score at its one marked token (an ORM's ``step_mask`` marks the last token)."""
    return masked_sum(scores, step_mask, dim=-1)


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """``pairwise_accuracy`` (a tie counts half: a coin flip) and ``margin`` (mean chosen minus rejected score) of
    ``[P]`` pairs of scores."""
    gap = (chosen - rejected).detach().float()
    ranked = (gap > 0).float() + 0.5 * (gap == 0).float()
    return {"pairwise_accuracy": ranked.mean().item(), "margin": gap.mean().item()}


def step_metrics(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How well step scores (logits, ``[B, T]``) classify the steps marked by ``mask``, a step predicted good when
    sigmoid(logit) > 0.5 and good when its label is at least 0.5 (soft labels are thresholded too).

    ``step_accuracy``; ``step_f1``, the F1 of the good class (0 when no step is good nor predicted good);
    ``step_positive_rate``, the share predicted good.
    """
    marked = mask.bool()
    predicted = (logits.detach() > 0)[marked]  # [steps]
    good = (labels >= 0.5)[marked]  # [steps]
    if predicted.numel() == 0:
        return {"step_accuracy": 0.0, "step_f1": 0.0, "step_positive_rate": 0.0}
    hits = float((predicted & good).sum())
    positives = float(predicted.sum() + good.sum())
    return {"step_accuracy": (predicted == good).float().mean().item(),
            "step_f1": 2 * hits / positives if positives else 0.0,
            "step_positive_rate": predicted.float().mean().item()}


@dataclass
class ORMOptions:
    center_coef: float = 0.0
    """Weight of an auxiliary loss center_coef × mean((r_chosen + r_rejected)²) that keeps the scores centred on 0 (Eisenstein et al. 2023; TRL's center_rewards_coefficient). Bradley-Terry trains only score differences; centred scores make the served sigmoid(score) comparable across prompts and runs. 0: off."""


@dataclass
class PRMOptions:
    labels_key: str = "hard_labels"
    """Row field holding the step labels: hard_labels (0 or 1 per step, Lightman et al. 2023) or soft_labels (in [0, 1]: the share of rollouts from the step that reach the right answer, Math-Shepherd)."""
    steps_key: str = "steps"
    """Row field holding the response's steps, a list of non-empty strings (data.prompt_key holds the prompt)."""


class ORM(AlgorithmBase):
    """Outcome reward model: the Bradley-Terry loss on preference pairs, each response scored at its last token."""

    name: ClassVar[str] = "orm"
    Options: ClassVar[type] = ORMOptions
    source: ClassVar[str] = "reward_pairs"
    options: ORMOptions

    def group_size(self) -> int:
        return 2  # a chosen/rejected pair

    def learners(self) -> dict[str, LearnerSpec]:
        return {"actor": LearnerSpec("reward", self.cfg.learner)}

    @classmethod
    def validate(cls, cfg: Config, o: ORMOptions) -> None:
        if o.center_coef < 0:
            raise ConfigError(f"algorithm.center_coef={o.center_coef} must be >= 0")
        check_pairs_whole(cfg)

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        scores = final_scores(outputs["scores"], batch.step_mask)  # [B], pairs [chosen, rejected, ...]
        chosen, rejected = scores[0::2], scores[1::2]  # [P]
        loss = bradley_terry_loss(chosen, rejected).mean()
        metrics = {"orm_loss": loss.item(), **pair_metrics(chosen, rejected),
                   "chosen_score": chosen.mean().item(), "rejected_score": rejected.mean().item()}
        if self.options.center_coef:
            loss = loss + self.options.center_coef * ((chosen + rejected) ** 2).mean()
        return loss, metrics


class PRM(AlgorithmBase):
    """Process reward model: each step's score against its label (binary cross-entropy, hard or soft labels)."""

    name: ClassVar[str] = "prm"
    Options: ClassVar[type] = PRMOptions
    source: ClassVar[str] = "step_labels"
    options: PRMOptions

    def group_size(self) -> int:
        return 1  # every labelled response its own group

    def learners(self) -> dict[str, LearnerSpec]:
        return {"actor": LearnerSpec("reward", self.cfg.learner)}

    @classmethod
    def validate(cls, cfg: Config, o: PRMOptions) -> None:
        for key, value in (("labels_key", o.labels_key), ("steps_key", o.steps_key)):
            if not value:
                raise ConfigError(f"algorithm.{key} is empty: name the row field that holds the step "
                                  f"{'labels' if key == 'labels_key' else 'texts'}")

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logits, labels, mask = outputs["scores"], batch.step_labels, batch.step_mask  # [B, T]
        loss = step_label_loss(logits, labels, mask)
        metrics = step_metrics(logits, labels, mask)
        return loss, {"prm_loss": loss.item(), "step_accuracy": metrics["step_accuracy"],
                      "step_score": masked_mean(torch.sigmoid(logits.detach()), mask).item()}
