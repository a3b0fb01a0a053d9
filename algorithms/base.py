"""The algorithm plug-in contract.

An algorithm is one class. It declares what it needs, and the composition root
(``launch/build.py``) builds it:

* ``Options``: a dataclass of its own options, each with a docstring. They sit
  beside ``name`` under ``algorithm`` in the config and reach ``__init__``
  parsed and typed.
* ``source``: where its batches come from, a registered source
  (``launch.sources``: ``rollout`` = the policy's own scored samples,
  ``preferences`` = chosen/rejected pairs from the data, ``sft`` /
  ``sampled_sft`` / ``teacher_sft`` = supervised examples from the data, the
  policy's kept samples or a teacher's) or ``module:Class``.
* ``learners()``: its learner groups, ``{name: LearnerSpec}``, in training
  order. Each names its model kind (``actors.models``: ``causal_lm``,
  ``causal_lm_untempered``, ``value``, ``reward``), its settings, how its micro-batches
  are formed and weighted, the loss method that trains it, and what it
  computes for the batch before the advantages (``provides``). The group
  named ``actor`` is the policy: its weights go to the rollout workers and
  into the exported model.

The driver calls the hooks in a fixed order and never branches on which
algorithm it is:

1. ``validate(cfg, options)`` (classmethod), before any actor starts: raise a
   one-line ``ConfigError`` for a combination it cannot run.
2. ``shape_rewards(batch)`` in the source, after the reward workers scored it.
3. ``filter_groups(batch) -> (kept, dropped)`` in the source, which samples
   more prompts until ``data.prompts_per_step`` groups are kept, in at most
   ``max_sampling_rounds()`` rounds.
4. ``compute_advantages(batch) -> metrics | None`` on the driver, once the
   reference's and the learner groups' ``provides`` are in the batch.
5. For each learner group whose ``trains(group, step)`` is true, the group's
   loss method ``(outputs, batch) -> (loss, metrics)`` inside every rank, once
   per micro-batch. ``outputs`` are the model kind's tensors under the current
   weights (``logprobs``/``entropy`` or ``values``, ``[B, T]``).

``state_dict()`` is the driver-side state (PPO's adaptive KL coefficient): it
goes into checkpoints, and to every learner rank before each update, where
``load_state_dict`` receives it, so the losses see what the driver sees.
``AlgorithmBase`` gives the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from rlcore.config import ConfigError, LearnerConfig

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config

Outputs = dict[str, torch.Tensor]
LOSS_WEIGHTS = ("samples", "tokens")


@dataclass(frozen=True)
class LearnerSpec:
    """One learner group of an algorithm."""

    model: str
    """Model kind: a registered name (``causal_lm``, ``value``, ``reward``) or ``module:Class``."""
    settings: LearnerConfig
    """World size, optimizer and batch sizes of the group."""
    settings_key: str = "learner"
    """Where ``settings`` sit in the config, for error messages."""
    loss: str = "loss"
    """Name of the algorithm's method that computes this group's loss."""
    provides: dict[str, str] = field(default_factory=dict)
    """Batch fields the group fills before the advantages, from its model's outputs under the weights before the
    update: ``{"old_logprobs": "logprobs"}`` for the policy, ``{"values": "values"}`` for a critic."""
    model_path: str | None = None
    """Initial weights (a Hugging Face folder or ``local://`` name); None: ``model.path``."""
    max_tokens_per_micro_batch: int | None = None
    """Micro-batches by a token budget: each mini-batch is sorted by length (prompt + response), longest first, and
    cut into micro-batches of at most this many padded tokens (samples × the longest), each cut to its own longest
    response; a longer sample is a micro-batch of its own. None: ``settings.micro_batch_size`` samples each, in order."""
    model_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model kind, besides the config and ``settings`` (``causal_lm_kd``'s hidden-state
    alignment: its layer pairs and the teacher's path)."""
    loss_weight: str = "samples"
    """How the micro-batch losses of a mini-batch add up: each weighted by its share of the mini-batch's ``samples``
    (right for a mean over samples), or of its ``tokens`` (response-mask tokens: a token-mean loss then has exactly
    the gradient of the token mean over the whole mini-batch, however the mini-batch is cut)."""

    def __post_init__(self) -> None:
        if self.loss_weight not in LOSS_WEIGHTS:
            raise ValueError(f"LearnerSpec.loss_weight='{self.loss_weight}' is not one of {', '.join(LOSS_WEIGHTS)}")
        if self.max_tokens_per_micro_batch is not None and self.max_tokens_per_micro_batch <= 0:
            raise ValueError(f"LearnerSpec.max_tokens_per_micro_batch={self.max_tokens_per_micro_batch} must be > 0")


class Algorithm(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type]
    source: ClassVar[str]

    def __init__(self, cfg: Config, options: Any) -> None: ...

    @classmethod
    def validate(cls, cfg: Config, options: Any) -> None: ...

    def group_size(self) -> int: ...

    def learners(self) -> dict[str, LearnerSpec]: ...

    def max_sampling_rounds(self) -> int: ...

    def shape_rewards(self, batch: RolloutBatch) -> None: ...

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]: ...

    def compute_advantages(self, batch: RolloutBatch) -> dict[str, float] | None: ...

    def trains(self, group: str, step: int) -> bool: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]: ...


def check_pairs_whole(cfg: Config) -> None:
    """For algorithms whose groups are chosen/rejected pairs: every rank's micro- and mini-batches must hold whole
    pairs. Raises a one-line ``ConfigError``."""
    lc = cfg.learner
    for key, value in (("learner.micro_batch_size", lc.micro_batch_size),
                       ("learner.mini_batch_size", lc.mini_batch_size // lc.world_size)):
        if value % 2:
            raise ConfigError(f"{key} must keep chosen/rejected pairs whole: make it even per learner rank")
    if lc.max_tokens_per_micro_batch is not None:  # the budget sorts samples by length: a pair would be split
        raise ConfigError(f"learner.max_tokens_per_micro_batch={lc.max_tokens_per_micro_batch} cuts micro-batches by "
                          "length, which splits chosen/rejected pairs: leave it unset and size them with "
                          "learner.micro_batch_size")


@dataclass
class NoOptions:
    """An algorithm without options of its own."""


class AlgorithmBase:
    """Defaults: the policy's own samples, one ``actor`` group, no shaping, every group kept, always trained."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    source: ClassVar[str] = "rollout"

    def __init__(self, cfg: Config, options: Any = None):
        self.cfg = cfg
        self.options = options if options is not None else self.Options()

    @classmethod
    def validate(cls, cfg: Config, options: Any) -> None:
        return None

    def group_size(self) -> int:
        """Samples per group in a trained batch."""
        return self.cfg.rollout.n

    def learners(self) -> dict[str, LearnerSpec]:
        """The policy, with its log-probs before the update kept as ``old_logprobs`` (the PPO ratio's denominator)."""
        return {"actor": LearnerSpec("causal_lm", self.cfg.learner, provides={"old_logprobs": "logprobs"})}

    def max_sampling_rounds(self) -> int:
        """Most generation rounds a step may take to fill its batch through ``filter_groups``."""
        return 1

    def shape_rewards(self, batch: RolloutBatch) -> None:
        return None

    def filter_groups(self, batch: RolloutBatch) -> tuple[RolloutBatch, RolloutBatch | None]:
        return batch, None

    def compute_advantages(self, batch: RolloutBatch) -> dict[str, float] | None:
        return None

    def trains(self, group: str, step: int) -> bool:
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
