"""LoRA adapters as state-dict arithmetic: a peft-wrapped model's weights in, the base model's weights out.

peft (``get_peft_model``) replaces each targeted ``Linear`` named ``<m>`` by one
holding the frozen ``<m>.base_layer.weight`` (and ``.bias``) and the adapter's
``<m>.lora_A.<adapter>.weight`` ``[r, in]`` and ``<m>.lora_B.<adapter>.weight``
``[out, r]``. The layer computes ``x W^T + scale · x A^T B^T`` with
``scale = lora_alpha / r``, so the merged weight is ``W + scale · B A``.
"""

from __future__ import annotations

import torch

BASE, LORA_A, LORA_B = ".base_layer.", ".lora_A.", ".lora_B."


def is_adapter(name: str) -> bool:
    """Whether ``name`` is a LoRA factor (``lora_A`` or ``lora_B``)."""
    return LORA_A in name or LORA_B in name


def merge_lora(state_dict: dict[str, torch.Tensor], scale: float, adapter: str = "default") -> dict[str, torch.Tensor]:
    """The base model's state dict (its own names) with every adapter merged in: ``W + scale · B A``."""
    out = {}
    for name, value in state_dict.items():
        if is_adapter(name):
            continue
        if name.endswith(BASE + "weight"):
            module = name[: -len(BASE + "weight")]
            a = state_dict[f"{module}{LORA_A}{adapter}.weight"].float()
            b = state_dict[f"{module}{LORA_B}{adapter}.weight"].float()
            out[f"{module}.weight"] = (value.float() + scale * (b @ a)).to(value.dtype)
        else:
            out[name.replace(BASE, ".")] = value
    return out


def adapter_weights(state_dict: dict[str, torch.Tensor], adapter: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's factors under the names peft saves them with (``base_model.model.<m>.lora_A.weight``), which
    ``PeftModel.from_pretrained`` and vLLM's ``LoRARequest`` load."""
    return {"base_model.model." + name.replace(f".{adapter}.", "."): value
            for name, value in state_dict.items() if is_adapter(name)}
