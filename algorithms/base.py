"""The algorithm plug-in contract.

An algorithm is one class, registered by name in ``algorithms.registry``. The
driver calls its hooks in a fixed order and never branches on which
algorithm it is:

1. ``validate(cfg)`` (classmethod), before any actor starts: raise a one-line
   ``ConfigError`` for a combination it cannot run.
2. ``shape_rewards(batch)`` on the driver, after the reward workers scored the
   batch: adjust ``batch.scores`` (e.g. length penalties).
3. ``filter_groups(batch) -> (kept, dropped)`` on the driver: the driver keeps
   sampling until it has ``data.prompts_per_step`` kept groups (or runs out of
   rounds).
4. ``compute_advantages(batch)`` on the driver, once reference log-probs are in.
5. ``loss(logprobs, entropy, batch) -> (loss, metrics)`` inside every learner
   rank, once per micro-batch.

``AlgorithmBase`` gives the no-op defaults for 1-3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


class Algorithm(Protocol):
    name: ClassVar[str]

    def __init__(self, cfg: Config) -> None: ...

    @classmethod
    def validate(cls, cfg: Config) -> None: ...

    def shape_rewards(self, batch: RolloutBatch) -> None: ...

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]: ...

    def compute_advantages(self, batch: RolloutBatch) -> None: ...

    def loss(
        self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class AlgorithmBase:
    """Defaults: accept any config, leave scores alone, keep every group."""

    name: ClassVar[str] = ""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg: Config) -> None:
        return None

    def shape_rewards(self, batch: RolloutBatch) -> None:
        return None

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        return batch, None
