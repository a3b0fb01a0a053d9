"""ReferenceWorker: a frozen copy of the initial policy that scores response tokens.

It runs as its own Ray actor (``actors.groups.ReferenceGroup``) or inside each rank of the policy's learner group
(``reference.host``: ``LearnerRank.reference_logprobs``).

It computes in ``model.dtype``, feeds each micro-batch padded or packed (``reference.packing``) and computes its
log-probs in chunks of ``reference.logits_chunk_tokens`` response tokens (``rlcore.sequences``).
"""

from __future__ import annotations

import torch

from actors.models import CausalLM, autocast, set_threads
from rlcore.batch import RolloutBatch, micro_batches
from rlcore.config import Config


class ReferenceWorker:
    def __init__(self, cfg: Config, model_path: str, own_process: bool = True):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if own_process:  # inside a learner rank (reference.host=policy) the rank's thread count stands
            set_threads(cfg.reference.num_threads, device)
        self.kind = CausalLM(cfg, cfg.reference)
        self.model = self.kind.build(model_path, device).eval().requires_grad_(False)
        self.micro_batch_size, self.mixed_precision = cfg.reference.micro_batch_size, cfg.reference.mixed_precision

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] reference log-probs of the response tokens, 0 on padding."""
        with autocast(self.model.device, self.mixed_precision):
            parts = [self.kind.forward(self.model, micro, ("logprobs",))["logprobs"].cpu()
                     for micro in micro_batches(batch, self.micro_batch_size)]
        return torch.cat(parts) * batch.response_mask
