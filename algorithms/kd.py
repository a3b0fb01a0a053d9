"""Token-level knowledge distillation: the student matches the teacher's next-token distribution at every position.

Hinton et al. 2015 (arXiv:1503.02531): a soft target at temperature T, the loss
scaled by T², mixed with the hard-label loss; GKD, Agarwal et al. 2024
(arXiv:2306.13649): the divergence (forward KL, reverse KL or the generalized
Jensen–Shannon with β) on sequences that are the data's, the teacher's or, a
share λ of the steps, the student's own (on-policy). OpenRLHF ships the first as
KD, TRL the second as GKD.

The teacher runs as ``algorithm.teacher_workers`` Ray actors of its own
(``actors.teacher.TeacherWorker``); for each step's sequences it returns its
``top_k`` log-probs and their ids at every response position (the ``kd``
source, ``launch.kd_source``). The student (the ``causal_lm_kd`` model kind)
computes its own log-probs at those ids and the mass it puts elsewhere; the loss
(``algorithms.losses.kd_loss``) compares the two over the k ids, with the rest
of the mass as one more outcome (``tail: bucket``) or dropped and both
renormalised (``tail: renormalize``). Both need the same vocabulary: a
teacher with another tokenizer is refused in one line, pointing to
``distill_sft``, which works across tokenizers.

Optionally (``hidden_layers``), TinyBERT's hidden-state alignment (Jiao et al.
2020, arXiv:1909.10351): the teacher also returns its hidden states of chosen
layers, and an MSE pulls the student's, through a learned linear projection to
the teacher's width, towards them (``algorithms.losses.hidden_mse``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

from algorithms.base import AlgorithmBase, LearnerSpec, Outputs
from algorithms.losses import KD_DIVERGENCES, KD_TAILS, hidden_mse, kd_loss, sft_loss
from algorithms.sft import check_budget
from rlcore.assets import resolve
from rlcore.config import ConfigError
from rlcore.schedule import anneal

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config, ReferenceConfig

SEQUENCES = ("data", "teacher")
TEMPERATURE_SCHEDULES = ("linear", "cosine")


@dataclass
class KDOptions:
    teacher_path: Optional[str] = field(  # noqa: UP045 (a '|' would split docs/config.md's table cell)
        default=None, metadata={"model_folder": True, "same_vocab": "distill_sft"})
    """The teacher: a Hugging Face folder or local:// name (required), with the student's tokenizer vocabulary (otherwise use distill_sft, which re-tokenizes the teacher's texts)."""
    top_k: int = 32
    """Teacher log-probs per response position sent to the learners (0: the whole vocabulary). Each costs 8 bytes (an fp32 log-prob and an int32 id) in the object store and on the learner: a step of B sequences and T response tokens ships B × T × top_k × 8 bytes (256 sequences × 64 tokens × 32 = 4 MiB); the student's logits are computed over the whole vocabulary either way."""
    divergence: str = "forward"
    """forward: KL(teacher ‖ student) (Hinton; mean-seeking); reverse: KL(student ‖ teacher) (mode-seeking); jsd: GKD's generalized Jensen–Shannon with beta."""
    beta: float = 0.5
    """The mixture weight of jsd, in (0, 1): M = beta × teacher + (1 − beta) × student; unused by forward and reverse."""
    tail: str = "bucket"
    """The teacher's mass outside its top_k: bucket: one more outcome holding the rest of the mass (exact when top_k covers the vocabulary; a student putting mass outside the teacher's top-k is penalised); renormalize: dropped, both distributions renormalised over the top_k ids."""
    alpha: float = 0.0
    """Weight of the hard-label loss (the token-mean NLL of the sequence's own tokens at temperature 1): loss = (1 − alpha) × KD + alpha × NLL."""
    sequences: str = "data"
    """Where the off-policy sequences come from: data: the data set's prompt/response rows (off-policy KD, data.train_files are SFT rows); teacher: the teacher's own samples (rollout.n per prompt, sampled at rollout.temperature on rollout workers of its own), prompts from data.train_files."""
    lmbda: float = 0.0
    """Share of steps trained on the student's own samples instead (GKD's λ: 1 = on-policy distillation, 0 = off-policy only); drawn per step with trainer.seed, so a resumed run draws the same."""
    temperature_start: float = 1.0
    """Distillation temperature T at step 1 (both distributions are softened by it; the loss is scaled by T²)."""
    temperature_end: float = 1.0
    """T at trainer.total_steps."""
    temperature_schedule: str = "linear"
    """How T goes from temperature_start to temperature_end: linear or cosine."""
    teacher_workers: int = 1
    """Teacher actors; each step's sequences are split over them (it must divide the step's sequences)."""
    teacher_num_cpus: float = 0.25
    """Ray CPUs per teacher actor."""
    teacher_num_gpus: float = 0.0
    """Ray GPUs per teacher actor."""
    teacher_micro_batch_size: int = 64
    """Sequences per teacher forward pass (its mixed precision, packing and threads are the reference's: reference.*)."""
    hidden_layers: list[list[int]] = field(default_factory=list)
    """Hidden-state alignment (TinyBERT), optional: [student_layer, teacher_layer] pairs, indices into Hugging Face's hidden_states (0: the embeddings, l: the output of decoder layer l, the last one after the final norm; negative: from the end). At each response position the student's state, through a linear projection to the teacher's width learned with it (the identity at first when the widths are equal), is pulled to the teacher's by an MSE (algorithms.losses.hidden_mse). The teacher ships B × T × pairs × its hidden width × 2 bytes (bf16) per step: 256 sequences × 64 tokens × one pair × 4096 = 128 MiB. The projections are checkpointed with the student and left out of its export. Empty: off."""
    hidden_weight: float = 0.1
    """Weight of the hidden-state MSE added to the loss: loss = (1 − alpha) × KD + alpha × NLL + hidden_weight × MSE (unused without hidden_layers). The MSE's size follows the states' scale (a trained model's middle layers: often far larger than the KD loss): watch actor/hidden_mse against actor/kd_loss. On the reasoning task 1.0 cost the student most of its accuracy (README)."""
    max_tokens_per_micro_batch: Optional[int] = None  # noqa: UP045 (a '|' would split docs/config.md's table cell)
    """Micro-batches of the student by a token budget, as sft's; null: learner.micro_batch_size sequences each."""


def check_hidden_layers(pairs: list[list[int]], student: str, teacher: str) -> None:
    """Every ``[student_layer, teacher_layer]`` pair names a hidden state each model has (``student``, ``teacher``:
    their folders): an index in [-(layers + 1), layers]. Raises ``ConfigError``."""
    from transformers import AutoConfig

    counts = [AutoConfig.from_pretrained(path).num_hidden_layers for path in (student, teacher)]
    for i, pair in enumerate(pairs):
        for layer, count, who, path in zip(pair, counts, ("student", "teacher"), (student, teacher)):
            if not -(count + 1) <= layer <= count:
                raise ConfigError(f"algorithm.hidden_layers[{i}]={list(pair)}: the {who} ({path}) has {count} layers, "
                                  f"hidden states 0..{count} (or -{count + 1}..-1)")


def samples_per_prompt(cfg: Config, o: KDOptions) -> int:
    """Sequences per prompt: 1 from the data set, ``rollout.n`` sampled (by the teacher, or the student)."""
    return 1 if o.sequences == "data" else cfg.rollout.n


class KD(AlgorithmBase):
    """Token-level distillation from a teacher's top-k next-token log-probs, mixed with the hard-label NLL."""

    name: ClassVar[str] = "kd"
    Options: ClassVar[type] = KDOptions
    source: ClassVar[str] = "kd"
    options: KDOptions

    @property
    def teacher_path(self) -> str:
        """The teacher's folder (a ``local://`` name built), which ``launch.build.prepare`` has checked before any
        actor starts: it may be a stage's export that does not exist yet when the config is read."""
        return resolve(self.options.teacher_path, self.cfg.trainer.cache_dir, "algorithm.teacher_path")

    @classmethod
    def validate(cls, cfg: Config, o: KDOptions) -> None:
        check_budget(o)
        if not o.teacher_path:
            raise ConfigError("algorithm.teacher_path is not set: name the teacher model (a Hugging Face folder or "
                              "local:// name)")
        for key, value, choices in (("divergence", o.divergence, KD_DIVERGENCES), ("tail", o.tail, KD_TAILS),
                                    ("sequences", o.sequences, SEQUENCES),
                                    ("temperature_schedule", o.temperature_schedule, TEMPERATURE_SCHEDULES)):
            if value not in choices:
                raise ConfigError(f"algorithm.{key}='{value}' is not one of {', '.join(choices)}")
        if o.divergence == "jsd" and not 0.0 < o.beta < 1.0:
            raise ConfigError(f"algorithm.beta={o.beta} must be in (0, 1) for divergence=jsd")
        for key, value in (("alpha", o.alpha), ("lmbda", o.lmbda)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"algorithm.{key}={value} must be in [0, 1]")
        for key, value in (("temperature_start", o.temperature_start), ("temperature_end", o.temperature_end)):
            if value <= 0:
                raise ConfigError(f"algorithm.{key}={value} must be > 0")
        if o.top_k < 0:
            raise ConfigError(f"algorithm.top_k={o.top_k} must be >= 0 (0: the whole vocabulary)")
        size = cfg.data.prompts_per_step * samples_per_prompt(cfg, o)
        if o.teacher_workers < 1 or size % o.teacher_workers:
            raise ConfigError(f"algorithm.teacher_workers={o.teacher_workers} must divide the {size} sequences of a "
                              "step (data.prompts_per_step × samples per prompt)")
        if o.lmbda > 0 and cfg.rollout.max_staleness > 0:
            raise ConfigError(f"algorithm.lmbda={o.lmbda} samples the student with its newest weights before each "
                              f"on-policy step: set rollout.max_staleness=0 (it is {cfg.rollout.max_staleness})")
        for i, pair in enumerate(o.hidden_layers):
            if len(pair) != 2:
                raise ConfigError(f"algorithm.hidden_layers[{i}]={list(pair)} must be a [student_layer, teacher_layer] "
                                  "pair")
        if o.hidden_weight < 0:
            raise ConfigError(f"algorithm.hidden_weight={o.hidden_weight} must be >= 0")
        if o.hidden_layers and cfg.learner.lora_rank:
            raise ConfigError("algorithm.hidden_layers trains a projection beside the student, which a LoRA learner "
                              f"(learner.lora_rank={cfg.learner.lora_rank}) would freeze: set learner.lora_rank=0 or "
                              "algorithm.hidden_layers=[]")
        if cfg.reference.enabled:
            raise ConfigError("kd trains without a reference policy (the teacher is its own worker): set "
                              "reference.enabled=false")

    def group_size(self) -> int:
        return samples_per_prompt(self.cfg, self.options)

    def learners(self) -> dict[str, LearnerSpec]:
        """The student (``causal_lm_kd``, with its projections for hidden-state alignment), its micro-batch losses
        weighted by their tokens; no pass before the update."""
        o = self.options
        alignment = {"hidden_layers": o.hidden_layers, "teacher_path": o.teacher_path} if o.hidden_layers else {}
        return {"actor": LearnerSpec("causal_lm_kd", self.cfg.learner, loss_weight="tokens",
                                     max_tokens_per_micro_batch=o.max_tokens_per_micro_batch,
                                     model_options=alignment)}

    def temperature(self, step: int) -> float:
        """The distillation temperature of step ``step`` (1-based)."""
        o = self.options
        return anneal(o.temperature_start, o.temperature_end, step, self.cfg.trainer.total_steps,
                      o.temperature_schedule)

    def on_policy(self, step: int) -> bool:
        """Whether step ``step`` trains on the student's own samples (probability ``lmbda``, seeded per step)."""
        lmbda = self.options.lmbda
        return lmbda >= 1.0 or (lmbda > 0.0 and random.Random(f"{self.cfg.trainer.seed}/kd/{step}").random() < lmbda)

    def teacher_settings(self) -> ReferenceConfig:
        """The teacher actors' settings: the reference's (precision, packing, threads), with the teacher's
        resources and micro-batch size."""
        o = self.options
        return dataclasses.replace(self.cfg.reference, num_cpus=o.teacher_num_cpus, num_gpus=o.teacher_num_gpus,
                                   micro_batch_size=o.teacher_micro_batch_size)

    def loss(self, outputs: Outputs, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        o, mask = self.options, batch.response_mask
        kd, metrics = kd_loss(outputs["topk_logprobs"], outputs["tail_logprob"], batch.teacher_topk_logprobs, mask,
                              divergence=o.divergence, beta=o.beta, tail=o.tail,
                              temperature=float(batch.teacher_temperature[0]))
        nll, nll_metrics = sft_loss(outputs["logprobs"], mask)
        metrics["nll"] = nll_metrics["sft_loss"]
        loss = kd if o.alpha == 0.0 else (1.0 - o.alpha) * kd + o.alpha * nll
        if "hidden" in outputs:
            mse, mse_metrics = hidden_mse(outputs["hidden"], batch.teacher_hidden, mask)
            loss = loss + o.hidden_weight * mse
            metrics.update(mse_metrics)
        metrics["loss"] = loss.item()
        return loss, metrics
