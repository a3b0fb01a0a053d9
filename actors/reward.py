"""RewardWorker: hosts one reward (a function or a user's class) and scores batches of samples.

A failure inside the reward never leaves this worker as an exception: if the
batched call raises (or breaks the output contract), every sample is scored
on its own, and only the samples that still fail come back as ``None`` with
the first traceback. Timeouts and dead workers are handled by the pool
(``actors.groups.RewardPool``), which can see them.
"""

from __future__ import annotations

import traceback

from typing import Any

from rewards.api import RewardSample, build_reward, call_score, check_scores


class RewardWorker:
    def __init__(self, name: str, target: Any, args: dict):
        self.name = name
        self.reward = build_reward(name, target, args)

    def ready(self) -> bool:
        return True

    def score(self, samples: list[RewardSample]) -> tuple[list[dict[str, float] | None], int, str | None]:
        """(one ``{key: value}`` or ``None`` per sample, failed-sample count, first traceback or None)."""
        try:
            return check_scores(self.name, call_score(self.reward, samples), len(samples)), 0, None
        except Exception:  # noqa: BLE001 -- the user's code: anything may come out
            first = traceback.format_exc()
        rows: list[dict[str, float] | None] = []
        for sample in samples:  # isolate the culprits: one sample at a time
            try:
                rows.append(check_scores(self.name, call_score(self.reward, [sample]), 1)[0])
            except Exception:  # noqa: BLE001
                rows.append(None)
        return rows, sum(r is None for r in rows), first
