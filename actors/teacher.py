"""TeacherWorker: a frozen teacher that gives its top-k next-token log-probs at every response position.

Token-level distillation (``algorithms.kd``) runs it as ``algorithm.teacher_workers`` Ray actors of their own
(``actors.groups.TeacherGroup``), each scoring a slice of the batch. It returns only the k largest log-probs and
their ids, ``[B, T, k]`` each: never the ``[B, T, V]`` logits; and, for hidden-state alignment, the hidden states of
chosen layers at the same positions.
"""

from __future__ import annotations

import torch

from actors.models import CausalLM, autocast, set_threads
from rlcore.batch import RolloutBatch, micro_batches
from rlcore.config import Config, ReferenceConfig
from rlcore.sequences import response_topk


class TeacherWorker:
    def __init__(self, cfg: Config, model_path: str, settings: ReferenceConfig):
        """``settings``: the reference's kind of settings (``algorithms.kd.KD.teacher_settings``): micro-batch size,
        mixed precision, packing, logits chunk, threads."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        set_threads(settings.num_threads, device)
        self.kind = CausalLM(cfg, settings)
        self.model = self.kind.build(model_path, device).eval().requires_grad_(False)
        self.micro_batch_size, self.mixed_precision = settings.micro_batch_size, settings.mixed_precision

    @torch.no_grad()
    def topk(self, batch: RolloutBatch, k: int, temperature: float,
             hidden_layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(log-probs [B, T, k] fp32, ids [B, T, k] int32, hidden)``: at each response position the teacher's ``k``
        most likely tokens under ``softmax(logits / temperature)`` (``k <= 0``: the whole vocabulary), 0 on padding;
        ``hidden``: its hidden states of ``hidden_layers`` there, ``[B, T, L, H]`` bf16 (half fp32's traffic), None
        without layers."""
        width = batch.response_mask.shape[1]
        values, ids, hidden = [], [], []
        with autocast(self.model.device, self.mixed_precision):
            for micro in micro_batches(batch, self.micro_batch_size):
                v, i, h = response_topk(self.model, micro.prompt_ids, micro.response_ids, k=k, temperature=temperature,
                                        pad_id=self.model.config.pad_token_id or 0, width=width,
                                        packing=self.kind.layout, chunk_tokens=self.kind.chunk_tokens,
                                        hidden_layers=tuple(hidden_layers))
                values.append(v.cpu())  # off the device as each micro-batch ends: its memory holds one at a time
                ids.append(i.cpu())
                if h is not None:
                    hidden.append(h.to(torch.bfloat16).cpu())
        return torch.cat(values), torch.cat(ids), torch.cat(hidden) if hidden else None
