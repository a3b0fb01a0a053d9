"""Supervised fine-tuning and distillation on the FSDP learners.

Four algorithms, one loss each, differing in where the examples come from:

* ``sft`` (source ``sft``): prompt/response rows of the data set, the loss on
  what the assistant wrote (``rlcore.chat.encode_conversation`` masks it).
* ``rejection_sft`` (source ``sampled_sft``): the policy's own samples that
  the reward marks correct (RFT, Yuan et al. 2023, arXiv:2308.01825; one
  iteration of STaR, Zelikman et al. 2022, per step), the rollout workers
  synced after every update.
* ``distill_sft`` (source ``teacher_sft``): a teacher model's samples (its own
  rollout workers, never updated), optionally only the correct ones, the
  texts re-tokenized with the student's tokenizer, so any teacher works
  (sequence-level knowledge distillation, Kim and Rush 2016).
* ``on_policy_distill`` (source ``rollout``): the student's own samples, each
  token pushed by the reverse KL to the teacher's log-probs there (GKD,
  Agarwal et al. 2024; Thinking Machines' on-policy distillation); the
  teacher is the reference worker (``reference.path``).

The first three train the model's own distribution (the
``causal_lm_untempered`` model kind: temperature 1 whatever
``rollout.temperature`` samples with) with the token-mean negative
log-likelihood (``algorithms.losses.sft_loss``). A step's examples are each a
group of their own; micro-batches may be formed by a token budget
(``max_tokens_per_micro_batch``), and their losses are weighted by their share
of the mini-batch's tokens, so the gradient is the token mean over the whole
mini-batch however it is cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from algorithms.base import AlgorithmBase, LearnerSpec, Outputs
from algorithms.losses import reverse_kl_loss, sft_loss
from algorithms.policy import on_policy_update
from rlcore.assets import resolve
from rlcore.config import ConfigError
from rlcore.functional import masked_mean, truncated_is_weights

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config

CORRECTIONS = ("auto", "token", "none")


def keep_samples(passed: torch.Tensor, group_ids: torch.Tensor, responses: list[str], per_group: int,
                 distinct: bool) -> list[int]:
    """Indices of the samples that become SFT examples, in batch order.

    A sample is kept when it ``passed`` (``[B]`` bool), at most ``per_group`` of each group (the samples of one
    prompt), and, with ``distinct``, only the first of a group's samples with the same response text.
    """
    kept, taken, seen = [], {}, set()
    for i, (ok, group) in enumerate(zip(passed.tolist(), group_ids.tolist())):
        if not ok or taken.get(group, 0) >= per_group or (distinct and (group, responses[i]) in seen):
            continue
        kept.append(i)
        taken[group] = taken.get(group, 0) + 1
        seen.add((group, responses[i]))
    return kept


def fill(count: int, size: int) -> list[int]:
    """``size`` picks from ``count`` kept examples: the first ``size`` of them, or, when short, all of them in
    order and then again from the first (deterministic, so a resumed run trains on the same batch)."""
    if count <= 0:
        raise ValueError("fill needs at least one kept example")
    return [i % count for i in range(size)]


@dataclass
class SFTOptions:
    max_tokens_per_micro_batch: Optional[int] = None  # noqa: UP045 (a '|' would split docs/config.md's table cell)
    """Micro-batches by a token budget: each mini-batch is sorted by length and cut into micro-batches of at most this many padded tokens (samples × the longest prompt + response); a longer example is a micro-batch of its own. null: learner.micro_batch_size examples each. Either way a micro-batch's loss counts by its share of the mini-batch's trained tokens."""


@dataclass
class RejectionSFTOptions(SFTOptions):
    samples_per_prompt: int = 1
    """Examples per prompt: a step trains on data.prompts_per_step × samples_per_prompt examples, at most samples_per_prompt of them from any one prompt's rollout.n samples."""
    min_score: Optional[float] = None  # noqa: UP045 (a '|' would split docs/config.md's table cell)
    """A sample passes when its reward.accuracy_term is at least 1 (null), or when its total reward is at least min_score. A sample cut off at rollout.max_new_tokens never passes: its end would be learnt as a stop."""
    distinct: bool = True
    """Keep each distinct response of a prompt once (RFT's distinct reasoning paths); false: repeats of one response count too."""
    max_sampling_rounds: int = 4
    """Most generation rounds per step (each data.prompts_per_step new prompts × rollout.n samples) to find the step's examples; a batch still short after them repeats the examples it has, in order (sampling/repeated)."""


@dataclass
class DistillSFTOptions(RejectionSFTOptions):
    teacher_path: Optional[str] = field(  # noqa: UP045 (a '|' would split docs/config.md's table cell)
        default=None, metadata={"model_folder": True})
    """The teacher: a Hugging Face folder or local:// name (required). It samples on rollout workers of its own (rollout.* settings), never updated; its texts are re-tokenized with the student's tokenizer, so its vocabulary may differ."""
    only_correct: bool = False
    """Keep only the teacher's samples that pass (see min_score), as rejection_sft does; false: every sample that ended with a stop token."""


@dataclass
class OnPolicyDistillOptions(SFTOptions):
    off_policy_correction: str = "auto"
    """Importance weights of the current student over the sampler (rollout log-probs), per token and capped at is_cap: token, none, or auto (token when the update goes off-policy: several mini-batches or epochs per step, or rollout.max_staleness > 0)."""
    is_cap: float = 2.0
    """Upper bound of the importance weights."""


class SFT(AlgorithmBase):
    """Supervised fine-tuning on the data set's prompt/response rows: the token-mean NLL of what the assistant wrote."""

    name: ClassVar[str] = "sft"
    Options: ClassVar[type] = SFTOptions
    source: ClassVar[str] = "sft"
    options: SFTOptions

    def group_size(self) -> int:
        return 1  # every example its own group

    def learners(self) -> dict[str, LearnerSpec]:
        """The policy at temperature 1; its micro-batch losses weighted by their tokens, no pass before the update."""
        return {"actor": LearnerSpec("causal_lm_untempered", self.cfg.learner, loss_weight="tokens",
                                     max_tokens_per_micro_batch=self.options.max_tokens_per_micro_batch)}

    @classmethod
    def validate(cls, cfg: Config, o: SFTOptions) -> None:
        check_budget(o)
        if cfg.reference.enabled:
            raise ConfigError(f"{cls.name} trains without a reference policy: set reference.enabled=false "
                              "(a reference worker would only cost time)")

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = sft_loss(outputs["logprobs"], batch.response_mask)
        metrics["entropy"] = masked_mean(outputs["entropy"].detach(), batch.response_mask).item()
        return loss, metrics


class RejectionSFT(SFT):
    """Rejection-sampling SFT: the policy's own samples that the reward marks correct, as SFT examples."""

    name: ClassVar[str] = "rejection_sft"
    Options: ClassVar[type] = RejectionSFTOptions
    source: ClassVar[str] = "sampled_sft"
    options: RejectionSFTOptions

    def group_size(self) -> int:
        """Examples per prompt of a step (each example is still a group of its own in the batch)."""
        return self.options.samples_per_prompt

    def max_sampling_rounds(self) -> int:
        return self.options.max_sampling_rounds

    @classmethod
    def validate(cls, cfg: Config, o: RejectionSFTOptions) -> None:
        super().validate(cfg, o)
        if not 1 <= o.samples_per_prompt <= cfg.rollout.n:
            raise ConfigError(f"algorithm.samples_per_prompt={o.samples_per_prompt} must be in [1, rollout.n="
                              f"{cfg.rollout.n}]: it keeps at most that many of a prompt's samples")
        if o.max_sampling_rounds < 1:
            raise ConfigError(f"algorithm.max_sampling_rounds={o.max_sampling_rounds} must be >= 1")

    def passes(self, batch: RolloutBatch) -> torch.Tensor:
        """``[B]`` bool: the scored samples that may become examples (correct, and ended with a stop token)."""
        if self.options.min_score is None:
            correct = batch.reward_terms[self.cfg.reward.accuracy_term] >= 1.0
        else:
            correct = batch.scores >= self.options.min_score
        return correct & ~batch.truncated

    def keep(self, batch: RolloutBatch) -> list[int]:
        """Indices of a scored batch's samples that become examples (``keep_samples``)."""
        o = self.options
        return keep_samples(self.passes(batch), batch.group_ids, batch.responses, o.samples_per_prompt, o.distinct)


class DistillSFT(RejectionSFT):
    """Distillation from a teacher's samples: its (optionally only correct) responses as the student's SFT examples."""

    name: ClassVar[str] = "distill_sft"
    Options: ClassVar[type] = DistillSFTOptions
    source: ClassVar[str] = "teacher_sft"
    options: DistillSFTOptions

    def __init__(self, cfg: Config, options: DistillSFTOptions | None = None):
        super().__init__(cfg, options)
        # Resolved here, at configure time: a missing teacher stops the run before any actor starts.
        self.teacher_path = resolve(self.options.teacher_path, cfg.trainer.cache_dir, "algorithm.teacher_path")

    @classmethod
    def validate(cls, cfg: Config, o: DistillSFTOptions) -> None:
        super().validate(cfg, o)
        if not o.teacher_path:
            raise ConfigError("algorithm.teacher_path is not set: name the teacher model (a Hugging Face folder or "
                              "local:// name)")

    def passes(self, batch: RolloutBatch) -> torch.Tensor:
        return super().passes(batch) if self.options.only_correct else ~batch.truncated


class OnPolicyDistill(AlgorithmBase):
    """On-policy distillation: the student's own samples, each token trained on its reverse KL to the teacher
    (the reference worker, ``reference.path``)."""

    name: ClassVar[str] = "on_policy_distill"
    Options: ClassVar[type] = OnPolicyDistillOptions
    source: ClassVar[str] = "rollout"
    options: OnPolicyDistillOptions

    def __init__(self, cfg: Config, options: OnPolicyDistillOptions | None = None):
        super().__init__(cfg, options)
        o = self.options
        off_policy = not on_policy_update(cfg, cfg.data.prompts_per_step * self.group_size())
        self.correct = o.off_policy_correction == "token" or (o.off_policy_correction == "auto" and off_policy)

    @classmethod
    def validate(cls, cfg: Config, o: OnPolicyDistillOptions) -> None:
        check_budget(o)
        if not cfg.reference.enabled or cfg.reference.path is None:
            raise ConfigError("on_policy_distill needs the teacher as the reference: set reference.enabled=true and "
                              "reference.path=<teacher model>")
        if o.off_policy_correction not in CORRECTIONS:
            raise ConfigError(f"algorithm.off_policy_correction='{o.off_policy_correction}' is not one of "
                              f"{', '.join(CORRECTIONS)}")
        if o.is_cap < 1:
            raise ConfigError(f"algorithm.is_cap={o.is_cap} must be >= 1")

    def learners(self) -> dict[str, LearnerSpec]:
        """The student at rollout.temperature, as the teacher's log-probs are; the sampler's log-probs are the old
        policy's, so no pass before the update."""
        return {"actor": LearnerSpec("causal_lm", self.cfg.learner, loss_weight="tokens",
                                     max_tokens_per_micro_batch=self.options.max_tokens_per_micro_batch)}

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs, mask = outputs["logprobs"], batch.response_mask  # [B, T]
        weights, metrics = None, {}
        if self.correct:
            weights, is_metrics = truncated_is_weights(logprobs.detach(), batch.rollout_logprobs, mask, "token",
                                                       self.options.is_cap)
            metrics.update({f"is/{k}": v for k, v in is_metrics.items()})
        loss, kl_metrics = reverse_kl_loss(logprobs, batch.ref_logprobs, mask, weights)
        metrics.update(kl_metrics)
        metrics["entropy"] = masked_mean(outputs["entropy"].detach(), mask).item()
        return loss, metrics


def check_budget(o: SFTOptions) -> None:
    if o.max_tokens_per_micro_batch is not None and o.max_tokens_per_micro_batch <= 0:
        raise ConfigError(f"algorithm.max_tokens_per_micro_batch={o.max_tokens_per_micro_batch} must be > 0 "
                          "(or null: learner.micro_batch_size examples per micro-batch)")
