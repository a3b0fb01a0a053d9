"""Collecting ahead of the learners: the *collect* half of a step, pipelined with the *learn* half.

With ``rollout.max_staleness = k``, the batches of steps s+1 … s+k are being
generated and scored while the learners update on step s. Collection of step
t starts only once the weights of update t-1-k are with the rollout workers,
so every sample of step t comes from a policy at most k versions behind the
one that trains on it (version t-1). The rollout workers sample with the
newest weights they have: a collection that starts after a later sync uses
those.

``k = 0`` collects in the caller's thread when the step asks for its batch:
rollout and update take turns, exactly as an unpipelined trainer does.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from launch.sources import Collected


class Collector:
    def __init__(self, source, ahead: int, last_step: int):
        self.source, self.ahead, self.last = source, ahead, last_step
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="collect") if ahead else None
        self.pending: dict[int, Future] = {}

    def start(self, first_step: int) -> None:
        """Begin collecting steps ``first_step`` … ``first_step + ahead`` (the rollout workers hold the current weights)."""
        for step in range(first_step, first_step + self.ahead + 1):
            self._submit(step)

    def take(self, step: int) -> Collected:
        """Step ``step``'s batch: collected now (k = 0), or waited for."""
        if self.pool is None:
            return self.source.collect(step)
        return self.pending.pop(step).result()

    def synced(self, step: int) -> None:
        """The weights of update ``step`` reached the rollout workers: step ``step + 1 + ahead`` may start."""
        self._submit(step + 1 + self.ahead)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, step: int) -> None:
        if self.pool is not None and step <= self.last and step not in self.pending:
            self.pending[step] = self.pool.submit(self.source.collect, step)


def staleness(batch_versions: torch.Tensor | None, policy_version: int, bound: int, step: int) -> dict[str, float]:
    """``staleness/*`` metrics of a batch about to train the policy at ``policy_version``.

    A sample's staleness is the number of policy updates between the weights that
    generated it and the weights it trains. Raises if one exceeds ``bound``:
    such a sample must never be trained on.
    """
    if batch_versions is None:  # not the policy's samples (a preference data set)
        return {}
    lag = policy_version - batch_versions  # [B]
    if int(lag.max()) > bound:
        raise RuntimeError(f"step {step}: a sample is {int(lag.max())} policy versions old, over "
                           f"rollout.max_staleness={bound}")
    return {"staleness/mean": lag.float().mean().item(), "staleness/max": float(lag.max()),
            "staleness/min": float(lag.min())}
