"""RewardWorker: hosts one reward (a function or a user's class) and scores batches of samples.

A failure inside the reward never leaves this worker as an exception: if the
batched call raises (or breaks the output contract), every sample is scored
on its own, and only the samples that still fail come back as ``None`` with
the first failure. A constructor that raises does not kill the actor either
(Ray would report that as a long ``ActorDiedError``): ``ready`` raises one line
naming the term, ``RewardStartError``, which stops the run. Timeouts and dead
workers are handled by the pool (``actors.groups.RewardPool``), which can see them.
"""

from __future__ import annotations

import traceback

from typing import Any

from rewards.api import (
    RewardFailure,
    RewardSample,
    RewardStartError,
    build_reward,
    call_score,
    check_scores,
    error_line,
)


class RewardWorker:
    def __init__(self, name: str, target: Any, args: dict, kind: str = "auto"):
        self.name = name
        try:
            self.reward, self.failure = build_reward(name, target, args, kind), None
        except Exception as exc:  # noqa: BLE001 -- the user's constructor: anything may come out
            self.reward, self.failure = None, f"reward {name!r} failed to start: {error_line(exc)}"

    def ready(self) -> bool:
        """True once the reward is built; ``RewardStartError`` (one line) when its constructor raised."""
        if self.failure:
            raise RewardStartError(self.failure)
        return True

    def score(self, samples: list[RewardSample]) -> tuple[list[dict[str, float] | None], int, RewardFailure | None]:
        """(one ``{key: value}`` or ``None`` per sample, failed-sample count, the first failure or None)."""
        if self.failure:  # a replacement whose constructor raised: every sample fails
            return [None] * len(samples), len(samples), RewardFailure(self.failure)
        try:
            return check_scores(self.name, call_score(self.reward, samples), len(samples)), 0, None
        except Exception as exc:  # noqa: BLE001 -- the user's code: anything may come out
            first = RewardFailure(error_line(exc), traceback.format_exc())
        rows: list[dict[str, float] | None] = []
        for sample in samples:  # isolate the culprits: one sample at a time
            try:
                rows.append(check_scores(self.name, call_score(self.reward, [sample]), 1)[0])
            except Exception:  # noqa: BLE001
                rows.append(None)
        return rows, sum(r is None for r in rows), first
