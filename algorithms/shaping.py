"""Reward shaping that depends on the response tokens, not its text."""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13), ``[B]``.

    With ``L_max = max_len`` and ``L_cache = buffer``:
    0 if ``|y| <= L_max - L_cache``; ``((L_max - L_cache) - |y|) / L_cache`` if
    ``|y| <= L_max``; -1 beyond. Scaled by ``penalty``.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer must be in (0, max_len={max_len}], got {buffer}")
    expected = max_len - buffer
    ramp = (expected - lengths.float()) / buffer  # [B], negative past `expected`
    return penalty * torch.where(lengths <= expected, torch.zeros_like(ramp), ramp.clamp(min=-1.0))
