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
4. ``compute_advantages(batch) -> metrics | None`` on the driver, once
   reference log-probs (and, with a critic, values) are in.
5. ``loss(logprobs, entropy, batch) -> (loss, metrics)`` inside every learner
   rank, once per micro-batch, if ``updates_policy(step)``.

Class attributes declare the roles it needs: ``uses_rollout`` (False: the
batches come from a preference data set) and ``uses_critic`` (a value-model
learner group, PPO). ``state_dict``/``load_state_dict`` carry driver-side
state (e.g. an adaptive KL coefficient) through checkpoints.
``AlgorithmBase`` gives the defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


class Algorithm(Protocol):
    name: ClassVar[str]
    uses_rollout: ClassVar[bool]
    uses_critic: ClassVar[bool]

    def __init__(self, cfg: Config) -> None: ...

    @classmethod
    def validate(cls, cfg: Config) -> None: ...

    def shape_rewards(self, batch: RolloutBatch) -> None: ...

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]: ...

    def compute_advantages(self, batch: RolloutBatch) -> dict[str, float] | None: ...

    def updates_policy(self, step: int) -> bool: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def loss(
        self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class AlgorithmBase:
    """Defaults: rollout, no critic; accept any config, leave scores alone, keep every group."""

    name: ClassVar[str] = ""
    uses_rollout: ClassVar[bool] = True
    uses_critic: ClassVar[bool] = False

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg: Config) -> None:
        return None

    @classmethod
    def group_size(cls, cfg: Config) -> int:
        """Samples per group in a trained batch."""
        return cfg.rollout.n

    def shape_rewards(self, batch: RolloutBatch) -> None:
        return None

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        return batch, None

    def updates_policy(self, step: int) -> bool:
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
