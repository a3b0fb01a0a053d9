"""The algorithm plug-in contract.

An algorithm is one class, registered by name in ``algorithms.registry``. The
driver calls it at two points and never branches on which algorithm it is:

* ``compute_advantages(batch)`` on the driver, after rewards and reference
  log-probs are in the batch;
* ``loss(logprobs, entropy, batch)`` inside every learner rank, once per
  micro-batch, returning ``(loss, metrics)``.

``validate(cfg)`` rejects config combinations the algorithm cannot run, with a
one-line ``ConfigError``; ``needs_reference(cfg)`` says whether the reference
worker must run.
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

    def compute_advantages(self, batch: RolloutBatch) -> None: ...

    def loss(
        self, logprobs: torch.Tensor, entropy: torch.Tensor, batch: RolloutBatch
    ) -> tuple[torch.Tensor, dict[str, float]]: ...
