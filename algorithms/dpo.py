"""DPO (Rafailov et al. 2023), offline from a preference data set or online from the policy's samples.

A pair is a group of two samples, chosen first: the batch is
``[chosen_0, rejected_0, chosen_1, rejected_1, ...]`` and mini- and
micro-batches keep pairs whole. The loss (``algorithm.dpo_loss``: sigmoid with
label smoothing = cDPO, robust, hinge, ipo; ``dpo_beta``) compares the
policy's and the reference's sequence log-probs of both responses.

* ``dpo`` (offline): pairs come from ``data.train_files`` rows with a prompt,
  a chosen and a rejected response; no rollout workers run.
* ``online_dpo`` (iterative): the rollout workers sample ``rollout.n``
  responses per prompt, the reward workers score them, and each group gives
  one pair, its best against its worst; groups whose scores all tie give none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from algorithms.base import AlgorithmBase
from algorithms.losses import DPO_KINDS, dpo_loss
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


class DPO(AlgorithmBase):
    name: ClassVar[str] = "dpo"
    uses_rollout: ClassVar[bool] = False

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.ac = cfg.algorithm

    @classmethod
    def group_size(cls, cfg: Config) -> int:
        return 2

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from rlcore.config import ConfigError

        ac = cfg.algorithm
        if ac.dpo_loss not in DPO_KINDS:
            raise ConfigError(f"algorithm.dpo_loss='{ac.dpo_loss}' is not one of {', '.join(DPO_KINDS)}")
        if ac.dpo_beta <= 0:
            raise ConfigError(f"algorithm.dpo_beta={ac.dpo_beta} must be > 0")
        if not 0 <= ac.label_smoothing < 0.5:
            raise ConfigError(f"algorithm.label_smoothing={ac.label_smoothing} must be in [0, 0.5)")
        if not cfg.reference.enabled:
            raise ConfigError("DPO compares against the reference policy: set reference.enabled=true")
        for key, value in (("learner.micro_batch_size", cfg.learner.micro_batch_size),
                           ("algorithm.mini_batch_size", ac.mini_batch_size // cfg.learner.world_size)):
            if value % 2:
                raise ConfigError(f"{key} must keep chosen/rejected pairs whole: make it even per learner rank")

    def compute_advantages(self, batch: RolloutBatch) -> None:
        return None  # DPO has no advantages: the preference itself is the signal

    def loss(self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        mask, ipo = batch.response_mask, self.ac.dpo_loss == "ipo"
        policy = sequence_logps(logprobs, mask, ipo)  # [B]
        ref = sequence_logps(batch.ref_logprobs, mask, ipo)  # [B]
        losses, chosen, rejected = dpo_loss(policy[0::2], policy[1::2], ref[0::2], ref[1::2], beta=self.ac.dpo_beta,
                                            kind=self.ac.dpo_loss, label_smoothing=self.ac.label_smoothing)  # [B/2]
        loss = losses.mean()
        return loss, {"dpo_loss": loss.item(), "reward_accuracy": (chosen > rejected).float().mean().item(),
                      "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item(),
                      "margin": (chosen - rejected).mean().item(),
                      "entropy": masked_mean(entropy.detach(), mask).item()}


class OnlineDPO(DPO):
    name: ClassVar[str] = "online_dpo"
    uses_rollout: ClassVar[bool] = True

    @classmethod
    def validate(cls, cfg: Config) -> None:
        from rlcore.config import ConfigError

        super().validate(cfg)
        if cfg.rollout.n < 2:
            raise ConfigError(f"rollout.n={cfg.rollout.n}: online DPO pairs the best and worst of a group, use rollout.n >= 2")

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        return batch.select(best_worst_pairs(batch.scores, batch.group_ids)), None
