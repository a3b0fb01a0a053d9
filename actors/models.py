"""Model kinds: what a learner group (or the reference) builds and what its forward pass returns.

An algorithm names a kind per learner group (``LearnerSpec.model``); a new kind
is a new class registered here, or named by import path. A kind is built with
the run's config and has

* ``build(path, device) -> torch.nn.Module``, in ``model.dtype`` (a Hugging Face model with
  ``.model.layers``, which FSDP shards one by one),
* ``forward(model, batch, wanted) -> {name: [B, T] tensor}`` for the response
  tokens of ``batch`` (its ``prompt_ids``, ``response_ids``, ``response_mask``),
  computing only the outputs in ``wanted``,
* ``save(state_dict, source_path, out_dir)``: write the weights as a folder that
  ``build`` (and, for the policy, vLLM) loads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from rlcore.plugins import Registry
from rlcore.sequences import response_logprobs, response_scores, response_values

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


class CausalLM:
    """The policy: log-probs (``logprobs``) and entropy (``entropy``) of the response tokens at ``rollout.temperature``."""

    outputs = ("logprobs", "entropy")

    def __init__(self, cfg: Config):
        self.temperature, self.dtype = cfg.rollout.temperature, cfg.model.dtype

    def build(self, path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype)).to(device)

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        logprobs, entropy = response_logprobs(model, batch.prompt_ids, batch.response_ids, pad_id=_pad_id(model),
                                              width=batch.response_mask.shape[1], temperature=self.temperature,
                                              with_entropy="entropy" in wanted)
        return {"logprobs": logprobs.float(), "entropy": entropy}

    def save(self, state_dict: dict[str, torch.Tensor], source_path: str, out_dir: str) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source_path),
                                                 dtype=getattr(torch, self.dtype))
        model.load_state_dict(state_dict)
        model.save_pretrained(out_dir)
        AutoTokenizer.from_pretrained(source_path).save_pretrained(out_dir)


class UntemperedCausalLM(CausalLM):
    """The policy's own distribution (temperature 1) whatever ``rollout.temperature`` samples with: log-probs and
    entropy of the response tokens, for supervised losses (SFT and distillation from samples), which train the
    model's distribution and not a tempered one."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.temperature = 1.0


class ValueModel:
    """A critic: the causal LM's architecture with a one-output head per token (``values``), the head new.

    The value of response token ``j`` is read where its log-prob is: at the
    position just before it (the state in which it is chosen), as in verl.
    """

    outputs = ("values",)

    def __init__(self, cfg: Config):
        self.dtype = cfg.model.dtype

    def build(self, path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(path, num_labels=1,
                                                               dtype=getattr(torch, self.dtype)).to(device)

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        return {"values": response_values(model, batch.prompt_ids, batch.response_ids, pad_id=_pad_id(model),
                                          width=batch.response_mask.shape[1])}

    def save(self, state_dict: dict[str, torch.Tensor], source_path: str, out_dir: str) -> None:
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(source_path, num_labels=1)
        model = AutoModelForTokenClassification.from_config(config, dtype=getattr(torch, self.dtype))
        model.load_state_dict(state_dict)
        model.save_pretrained(out_dir)


class RewardModel(ValueModel):
    """A learned reward model: the causal LM's architecture (or a reward model's) with a one-output head per token,
    the head new when built from a causal LM. ``scores`` of response token ``j`` are read at the token itself, once
    it is written (``rlcore.sequences.response_scores``, unlike a critic's values); a step's score is the score of
    its last token (``rlcore.reward_inputs``). Exported with its tokenizer, which the ``orm`` and ``prm`` rewards
    load with it."""

    outputs = ("scores",)

    def build(self, path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(path, num_labels=1)
        # The head's input dropout (0.1 by default) would stay on in the learners' evaluation passes, which run
        # in training mode: the scores are trained and evaluated without it.
        config.classifier_dropout = 0.0
        return AutoModelForTokenClassification.from_pretrained(path, config=config,
                                                               dtype=getattr(torch, self.dtype)).to(device)

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        return {"scores": response_scores(model, batch.prompt_ids, batch.response_ids, pad_id=_pad_id(model),
                                          width=batch.response_mask.shape[1])}

    def save(self, state_dict: dict[str, torch.Tensor], source_path: str, out_dir: str) -> None:
        from transformers import AutoTokenizer

        super().save(state_dict, source_path, out_dir)
        AutoTokenizer.from_pretrained(source_path).save_pretrained(out_dir)


def set_threads(requested: int, device: torch.device | str = "cpu", sharers: int = 1) -> int:
    """Give torch ``requested`` intra-op threads; returns the count set.

    ``0`` derives it from the machine and the placement. On CPU: the cores this
    process may run on (its CPU affinity) over ``sharers``, the ranks of its group
    on the same machine, at least 1. Ray sets ``OMP_NUM_THREADS`` to an actor's
    ``num_cpus`` rounded to at least 1, so a role with ``num_cpus=0.25`` would
    otherwise run torch on one thread while the other cores idle. On a GPU the
    work waits on the device, not on CPU threads, and several GPU ranks share a
    node's cores: the count Ray set (the actor's ``num_cpus``) is kept.
    """
    if requested:
        count = requested
    elif torch.device(device).type != "cpu":
        return torch.get_num_threads()
    else:
        count = max(1, len(os.sched_getaffinity(0)) // sharers)
    torch.set_num_threads(count)
    return count


def autocast(device: torch.device | str, mixed_precision: str):
    """``torch.autocast`` to bfloat16 for ``mixed_precision="bf16"``, a no-op for ``"none"``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def _pad_id(model) -> int:
    return model.config.pad_token_id or 0


MODELS: Registry[type] = Registry("model kind", {"causal_lm": CausalLM, "causal_lm_untempered": UntemperedCausalLM,
                                                 "value": ValueModel, "reward": RewardModel})
