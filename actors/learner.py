"""Learner: one rank of the FSDP2-sharded policy.

``learner.world_size`` learners form one process group (gloo on CPU, nccl on
CUDA). The algorithm plug-in supplies the loss; this class supplies the
policy's log-probs, the update loop (from ``FSDPWorker``) and the weights that
go to the rollout workers. The same class runs under Ray
(``actors.groups.LearnerGroup``) or under torchrun (``Learner.from_env``).

Loss aggregation is per rank and per micro-batch (verl does the same); with
equal slices this is the global mean for the sequence-level modes and close
to it for ``token-mean``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from actors.fsdp import FSDPWorker, free_address
from rlcore.batch import RolloutBatch
from rlcore.config import Config
from rlcore.sequences import response_logprobs

__all__ = ["Learner", "free_address"]


class Learner(FSDPWorker):
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int):
        from algorithms import get_algorithm_class

        super().__init__(cfg, model_path, rank, world_size, cfg.learner)
        self.algorithm = get_algorithm_class(cfg.algorithm.name)(cfg)

    def build_model(self) -> torch.nn.Module:
        from actors.reference import load_causal_lm

        return load_causal_lm(self.model_path, self.cfg.model.dtype, self.device)

    def _logprobs(self, batch: RolloutBatch, with_entropy: bool):
        return response_logprobs(self.model, batch.prompt_ids, batch.response_ids, pad_id=self.pad_id,
                                 width=batch.response_mask.shape[1], temperature=self.cfg.rollout.temperature,
                                 with_entropy=with_entropy)

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] current-policy log-probs of this rank's slice, 0 on padding."""
        parts = [self._logprobs(micro, False)[0].float().cpu() for micro in self.micro_batches(batch)]
        return torch.cat(parts) * batch.response_mask

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """Record the pre-update log-probs, then run the algorithm's loss over mini-batches."""
        batch.old_logprobs = self.logprobs(batch)

        def loss_fn(micro: RolloutBatch):
            logprobs, entropy = self._logprobs(micro, with_entropy=True)
            return self.algorithm.loss(logprobs.float(), entropy, micro)

        return self.optimize(batch, loss_fn)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Gathered full weights with Hugging Face names on rank 0 (None elsewhere). Collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.rank == 0 else None

    def export(self, path: str) -> None:
        """Write the policy as a Hugging Face folder (weights, config, tokenizer). Collective."""
        sd = self.full_state_dict()
        if self.rank == 0:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            config = AutoConfig.from_pretrained(self.model_path)
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, self.cfg.model.dtype))
            model.load_state_dict(sd)
            model.save_pretrained(path)
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)
        dist.barrier()
