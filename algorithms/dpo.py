"""DPO (Rafailov et al. 2023), offline from a preference data set or online from the policy's samples.

A pair is a group of two samples, chosen first: the batch is
``[chosen_0, rejected_0, chosen_1, rejected_1, ...]`` and mini- and
micro-batches keep pairs whole. The loss (``algorithm.loss``: sigmoid with
label smoothing = cDPO, robust, hinge, ipo; ``algorithm.beta``) compares the
policy's and the reference's sequence log-probs of both responses.

* ``dpo`` (offline, source ``preferences``): pairs come from ``data.train_files``
  rows with a prompt, a chosen and a rejected response; no rollout workers run.
* ``online_dpo`` (iterative): the rollout workers sample ``rollout.n``
  responses per prompt, the reward workers score them, and each group gives
  one pair, its best against its worst; groups whose scores all tie give none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.base import AlgorithmBase, LearnerSpec, Outputs, check_pairs_whole
from algorithms.losses import DPO_KINDS, dpo_loss
from rlcore.config import ConfigError
from rlcore.functional import masked_mean, masked_sum

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


def sequence_logps(logprobs: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """[B]: summed (or, for IPO, averaged) response log-probs."""
    return masked_mean(logprobs, mask, dim=-1) if average else masked_sum(logprobs, mask, dim=-1)


def best_worst_pairs(scores: torch.Tensor, group_ids: torch.Tensor) -> list[int]:
    """Indices ``[best_0, worst_0, best_1, worst_1, ...]`` per group, skipping groups whose scores all tie.

    Ties for best (or worst) go to the earliest sample, so the choice is deterministic.
    """
    order: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids.tolist()):
        order.setdefault(g, []).append(i)
    pairs = []
    for members in order.values():
        values = scores[members]
        best, worst = members[int(values.argmax())], members[int(values.argmin())]
        if scores[best] > scores[worst]:
            pairs += [best, worst]
    return pairs


@dataclass
class DPOOptions:
    beta: float = 0.1
    """Strength of the implicit KL constraint."""
    loss: str = "sigmoid"
    """Loss variant: sigmoid (with label_smoothing: cDPO), robust, hinge or ipo."""
    label_smoothing: float = 0.0
    """Assumed share of flipped preference labels (cDPO, robust)."""


@dataclass
class OnlineDPOOptions(DPOOptions):
    max_sampling_rounds: int = 4
    """Most generation rounds per step to find data.prompts_per_step groups whose scores do not all tie; a batch still short after them repeats the pairs it has."""


class DPO(AlgorithmBase):
    """Offline DPO: chosen/rejected pairs from the data set (source ``preferences``); the reference policy is the baseline."""

    name: ClassVar[str] = "dpo"
    Options: ClassVar[type] = DPOOptions
    source: ClassVar[str] = "preferences"
    options: DPOOptions

    def group_size(self) -> int:
        return 2

    def learners(self) -> dict[str, LearnerSpec]:
        return {"actor": LearnerSpec("causal_lm", self.cfg.learner)}  # the reference is the only baseline

    @classmethod
    def validate(cls, cfg: Config, o: DPOOptions) -> None:
        if o.loss not in DPO_KINDS:
            raise ConfigError(f"algorithm.loss='{o.loss}' is not one of {', '.join(DPO_KINDS)}")
        if o.beta <= 0:
            raise ConfigError(f"algorithm.beta={o.beta} must be > 0")
        if not 0 <= o.label_smoothing < 0.5:
            raise ConfigError(f"algorithm.label_smoothing={o.label_smoothing} must be in [0, 0.5)")
        if not cfg.reference.enabled:
            raise ConfigError("DPO compares against the reference policy: set reference.enabled=true")
        check_pairs_whole(cfg)

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        o, mask = self.options, batch.response_mask
        ipo = o.loss == "ipo"
        policy = sequence_logps(outputs["logprobs"], mask, ipo)  # [B]
        ref = sequence_logps(batch.ref_logprobs, mask, ipo)  # [B]
        losses, chosen, rejected = dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta=o.beta,
                                            kind=o.loss, label_smoothing=o.label_smoothing)  # [B/2]
        loss = losses.mean()
        return loss, {"dpo_loss": loss.item(), "reward_accuracy": (chosen > rejected).float().mean().item(),
                      "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item(),
                      "margin": (chosen - rejected).mean().item(),
                      "entropy": masked_mean(outputs["entropy"].detach(), mask).item()}


class OnlineDPO(DPO):
    """Online DPO: pairs from the policy's own samples, the best against the worst of each group as the reward workers rank them."""

    name: ClassVar[str] = "online_dpo"
    Options: ClassVar[type] = OnlineDPOOptions
    source: ClassVar[str] = "rollout"
    options: OnlineDPOOptions

    @classmethod
    def validate(cls, cfg: Config, o: OnlineDPOOptions) -> None:
        super().validate(cfg, o)
        if cfg.rollout.n < 2:
            raise ConfigError(f"rollout.n={cfg.rollout.n}: online DPO pairs the best and worst of a group, use rollout.n >= 2")
        if o.max_sampling_rounds < 1:
            raise ConfigError(f"algorithm.max_sampling_rounds={o.max_sampling_rounds} must be >= 1")

    def max_sampling_rounds(self) -> int:
        return self.options.max_sampling_rounds

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        return batch.select(best_worst_pairs(batch.scores, batch.group_ids)), None
