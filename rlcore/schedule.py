"""The learning-rate schedule: a multiplier of ``learner.lr`` per optimizer step (``learner.lr_schedule``)."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine", "linear")


def lr_multiplier(step: int, warmup: int, total: int, schedule: str = "constant", min_ratio: float = 0.0) -> float:
    """The factor on the base learning rate before optimizer step ``step`` (0-based) of ``total``.

    A linear warm-up over the first ``warmup`` steps, ``(step + 1) / warmup``; then 1 (``constant``), or a decay
    from 1 at the end of the warm-up to ``min_ratio`` at step ``total``: half a cosine (``cosine``) or a straight
    line (``linear``). Steps past ``total`` keep ``min_ratio``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


def anneal(start: float, end: float, step: int, total: int, schedule: str = "linear") -> float:
    """A value going from ``start`` at step 1 to ``end`` at step ``total`` (1-based): in a straight line
    (``linear``), or along half a cosine (``cosine``: slow at both ends); ``end`` past ``total``."""
    if total <= 1:
        return end
    return end + (start - end) * lr_multiplier(step - 1, 0, total - 1, schedule)
