"""Token-level distillation that records what its learner received: the sequences, the teacher's top-k and its
hidden states."""

from __future__ import annotations

from pathlib import Path

import torch

from algorithms.kd import KD


class RecordingKD(KD):
    """``KD``, each micro-batch's sequences and teacher top-k saved under ``trainer.output_dir/received``."""

    name = "recording_kd"

    def loss(self, outputs, batch):
        folder = Path(self.cfg.trainer.output_dir) / "received"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"prompt_ids": batch.prompt_ids, "response_ids": batch.response_ids,
                    "mask": batch.response_mask, "values": batch.teacher_topk_logprobs,
                    "ids": batch.teacher_topk_ids, "temperature": batch.teacher_temperature,
                    "hidden": batch.teacher_hidden},
                   folder / f"{len(list(folder.iterdir())):05d}.pt")
        return super().loss(outputs, batch)
