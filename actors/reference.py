"""ReferenceWorker: a frozen copy of the initial policy that scores response tokens."""

from __future__ import annotations

import torch

from rlcore.batch import RolloutBatch
from rlcore.sequences import response_logprobs


def load_causal_lm(path: str, dtype: str, device: torch.device | str = "cpu"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)


class ReferenceWorker:
    def __init__(self, model_path: str, dtype: str = "float32", temperature: float = 1.0, micro_batch_size: int = 64):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_causal_lm(model_path, dtype, device).eval().requires_grad_(False)
        self.pad_id = self.model.config.pad_token_id or 0
        self.temperature, self.micro_batch_size = temperature, micro_batch_size

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] reference log-probs of the response tokens, 0 on padding."""
        width = batch.response_mask.shape[1]
        parts = []
        for start in range(0, len(batch), self.micro_batch_size):
            stop = start + self.micro_batch_size
            lp, _ = response_logprobs(self.model, batch.prompt_ids[start:stop], batch.response_ids[start:stop],
                                      pad_id=self.pad_id, width=width, temperature=self.temperature)
            parts.append(lp.float().cpu())
        return torch.cat(parts) * batch.response_mask
