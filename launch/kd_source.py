"""The ``kd`` source (``algorithms.kd``): a step's sequences, each response position with the teacher's top-k.

Per step, the sequences are

* the data set's prompt/response rows (``algorithm.sequences=data``, SFT rows,
  encoded as the ``sft`` source encodes them), or the teacher's samples
  (``sequences=teacher``: ``rollout.n`` per prompt on rollout workers of its own,
  the sampled ids as they are, since the two share a vocabulary);
* or, on a share ``algorithm.lmbda`` of the steps (``KD.on_policy``), the
  student's own samples on the same prompts, from rollout workers synced with
  the student before the step (GKD's on-policy data).

Then the teacher actors (``actors.groups.TeacherGroup``) add their top-k log-probs
and ids at the step's temperature (``KD.temperature``), and the hidden states of
the layers ``algorithm.hidden_layers`` names. Evaluation: the student's
greedy accuracy on the eval prompts and, for SFT eval rows, ``eval/loss`` (its
NLL of their responses); the teacher's greedy accuracy once, as
``eval/teacher_accuracy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlcore.batch import RolloutBatch
from rlcore.config import Config
from rlcore.data import PromptRow, PromptSampler, SFTRow, load_prompts, load_sft

if TYPE_CHECKING:
    from actors.groups import LearnerGroup
    from launch.sources import Collected, Roles


class KDSource:
    """Sequences from the data, the teacher or the student, annotated with the teacher's top-k log-probs."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list, eval_rows: list):
        from transformers import AutoTokenizer

        from actors.groups import RewardGroup, RolloutGroup, TeacherGroup
        from launch.sft_sources import shippable

        self.cfg, self.algorithm, o = cfg, algorithm, algorithm.options
        self.actor = roles.learners["actor"]
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.tools = roles.tools
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        evals = eval_rows[: cfg.data.max_eval_prompts] if cfg.trainer.eval_every > 0 else []
        sft_evals = [r for r in evals if isinstance(r, SFTRow)]
        self.eval_batch = shippable(self.examples(sft_evals), cfg.learner.world_size) if sft_evals else None
        self.eval_prompts = [self.prompt(r) for r in evals if r.answer is not None]
        self.teacher = TeacherGroup(cfg, algorithm.teacher_path, algorithm.teacher_settings(), o.teacher_workers)
        # The student's rollout workers sample its on-policy steps and evaluate it; the teacher's sample its sequences.
        self.student = RolloutGroup(cfg, cfg.model.path) if o.lmbda > 0 or self.eval_prompts else None
        self.teacher_rollout = RolloutGroup(cfg, algorithm.teacher_path) if o.sequences == "teacher" else None
        self.rewards = RewardGroup(roles.reward_terms) if self.eval_prompts else None
        self.pending: tuple[LearnerGroup, int] | None = None  # the student's newest weights, pushed when needed
        self.teacher_eval: dict[str, float] = {}
        self.ready = self.teacher.ready + [ref for part in (self.student, self.teacher_rollout, self.rewards)
                                           if part is not None for ref in part.ready]

    def prompt(self, row) -> PromptRow:
        """A row's prompt as the rollout workers take it (an SFT row's rendered as its examples are)."""
        from launch.sft_sources import prompt_row

        return prompt_row(row, self.tokenizer, self.cfg.data.system_prompt, self.tools) if isinstance(row, SFTRow) \
            else row

    def examples(self, rows: list[SFTRow]) -> RolloutBatch:
        from launch.sft_sources import sft_examples

        return sft_examples(rows, self.tokenizer, self.cfg.data.system_prompt, self.tools)

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list:
        """SFT rows for ``algorithm.sequences=data``, prompt rows for ``teacher``."""
        if cfg.algorithm["sequences"] == "data":
            return load_sft(files, cfg.data)
        return load_prompts(files, cfg.data.prompt_key, cfg.data.answer_key)

    @classmethod
    def check(cls, cfg: Config, rows: list, tokenizer) -> None:
        """SFT rows encoded once while the learners start (``SFTSource.check``); the hidden-state alignment's layers
        against both models (``algorithms.kd.check_hidden_layers``)."""
        from algorithms.kd import check_hidden_layers
        from launch.sft_sources import SFTSource
        from rlcore.assets import resolve

        if cfg.algorithm["sequences"] == "data":
            SFTSource.check(cfg, rows, tokenizer)
        if cfg.algorithm["hidden_layers"]:
            teacher = resolve(cfg.algorithm["teacher_path"], cfg.trainer.cache_dir, "algorithm.teacher_path")
            check_hidden_layers(cfg.algorithm["hidden_layers"], cfg.model.path, teacher)

    def student_rollout(self):
        """The student's rollout workers, with its newest weights."""
        if self.pending is not None:
            actor, version = self.pending
            self.student.update_weights(actor.state_dict_ref(), version)
            self.pending = None
        return self.student

    def collect(self, step: int) -> Collected:
        from actors.groups import Shipment
        from launch.sources import Collected, sampling_seed, timed

        o, stats = self.algorithm.options, {}
        on_policy = self.algorithm.on_policy(step)
        rows = self.sampler.batch(step)
        seed = sampling_seed(self.cfg.trainer.seed, step)
        with timed(stats, "time/rollout"):
            if on_policy or o.sequences == "teacher":
                sampler = self.student_rollout() if on_policy else self.teacher_rollout
                batch = sampler.generate([self.prompt(r) for r in rows], self.algorithm.group_size(), seed)
                batch.rollout_logprobs = None  # at rollout.temperature: not what the student's loss compares
                batch.scores = torch.zeros(len(batch))  # nothing scores them: the teacher's distribution is the target
                if not on_policy:
                    batch.policy_version = None  # the teacher's samples: never stale
            else:
                batch = self.examples(rows)
        temperature = self.algorithm.temperature(step)
        with timed(stats, "time/teacher"):
            batch.teacher_topk_logprobs, batch.teacher_topk_ids, batch.teacher_hidden = self.teacher.topk(
                Shipment(batch), o.top_k, temperature, tuple(pair[1] for pair in o.hidden_layers))
        batch.teacher_temperature = torch.full((len(batch),), temperature)
        lengths = batch.response_mask.sum(-1)
        stats.update({"kd/temperature": temperature, "kd/on_policy": float(on_policy),
                      "kd/tokens": float(lengths.sum()), "response_length/mean": lengths.mean().item(),
                      "faults/teacher/restarts": float(self.teacher.faults["restarts"])})
        return Collected(batch, stats)

    def evaluate(self) -> dict[str, float]:
        """The student's greedy accuracy on the eval prompts, ``eval/loss`` on SFT eval rows, and once the teacher's
        greedy accuracy (``eval/teacher_accuracy``)."""
        from launch.sft_sources import heldout_loss
        from launch.sources import greedy_eval

        metrics = {}
        if self.eval_batch is not None:
            metrics["eval/loss"] = heldout_loss(self.actor, self.eval_batch)
        if self.eval_prompts:
            term = self.cfg.reward.accuracy_term
            if self.teacher_rollout is not None and not self.teacher_eval:
                self.teacher_eval = {"eval/teacher_accuracy": greedy_eval(self.teacher_rollout, self.rewards,
                                                                          self.eval_prompts, term)["eval/accuracy"]}
            metrics.update(self.teacher_eval)
            metrics.update(greedy_eval(self.student_rollout(), self.rewards, self.eval_prompts, term))
        return metrics

    def sync(self, actor: LearnerGroup, version: int) -> None:
        self.pending = (actor, version)
