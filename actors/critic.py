"""Critic: one rank of the FSDP2-sharded value model for PPO.

The value model is the policy's architecture with a one-output head per token
(``AutoModelForTokenClassification``, ``num_labels=1``), initialised from
``model.critic_path`` or, by default, the policy's weights (the head starts
random). ``critic.world_size`` ranks form their own process group.
"""

from __future__ import annotations

import torch

from actors.fsdp import FSDPWorker
from algorithms.losses import value_loss
from rlcore.batch import RolloutBatch
from rlcore.config import Config
from rlcore.functional import masked_mean
from rlcore.sequences import response_values


class Critic(FSDPWorker):
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int):
        super().__init__(cfg, cfg.model.critic_path or model_path, rank, world_size, cfg.critic)

    def build_model(self) -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        model = AutoModelForTokenClassification.from_pretrained(
            self.model_path, num_labels=1, dtype=getattr(torch, self.cfg.model.dtype))
        return model.to(self.device)

    def _values(self, batch: RolloutBatch) -> torch.Tensor:
        return response_values(self.model, batch.prompt_ids, batch.response_ids, pad_id=self.pad_id,
                               width=batch.response_mask.shape[1])

    @torch.no_grad()
    def values(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] value estimates of this rank's slice, 0 on padding."""
        parts = [self._values(micro).cpu() for micro in self.micro_batches(batch)]
        return torch.cat(parts) * batch.response_mask

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """Clipped value regression onto ``batch.returns`` (``batch.values`` are the old values)."""
        ac = self.cfg.algorithm

        def loss_fn(micro: RolloutBatch):
            values = self._values(micro)
            loss, metrics = value_loss(values, micro.values, micro.returns, micro.response_mask,
                                       clip=ac.value_clip, agg=ac.loss_agg)
            metrics["value_loss"] = loss.item()
            metrics["values"] = masked_mean(values.detach(), micro.response_mask).item()
            return loss, metrics

        return self.optimize(batch, loss_fn)
