"""Sources of a learned reward model's examples (``algorithms/reward_models.py``); registered in
``launch.sources.SOURCES``.

* ``reward_pairs`` (``orm``): preference rows ``{prompt, chosen, rejected}`` with string responses, each row
  a pair of samples, chosen first; the response is one step.
* ``step_labels`` (``prm``): step-labelled rows (``rlcore.data.load_step_labels``), each a sample whose
  ``step_labels`` hold its labels at the steps' last tokens.

Both encode with ``rlcore.reward_inputs.encode_reward_input``, which the ``orm`` and ``prm`` rewards use
too, after rendering the prompt as ``rlcore.data.render_prompts`` renders RL prompts (the chat template for
message lists, ``data.system_prompt``): a reward term receives that rendered text, so the model is trained on
what it will be served. Every row is encoded once at load, so a row the template or the tokenizer cannot
take stops the run before its first step, naming its file and line. No rollout or reward workers run;
evaluation (``data.eval_files``, every ``trainer.eval_every`` steps) scores the held-out rows with the
actor group's forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from algorithms.reward_models import final_scores, pair_metrics, step_metrics
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.chat import ChatError, render_prompt
from rlcore.config import Config, ConfigError
from rlcore.data import (
    DataError,
    PreferenceRow,
    PromptSampler,
    StepRow,
    load_step_labels,
)
from rlcore.reward_inputs import RewardInput, encode_reward_input, step_row
from rlcore.test_time import within_problem_accuracy

if TYPE_CHECKING:  # the groups import Ray, which the composition root must not import before Ray is set up
    from actors.groups import LearnerGroup
    from launch.sources import Collected, Roles

# launch.sources registers these classes, so its helpers (Collected, PreferenceSource) are imported where used.


def encode_row(prompt: Any, steps: list[str], tokenizer, system_prompt: str | None, source: str) -> RewardInput:
    """A row's prompt, rendered as ``rlcore.data.render_prompts`` renders RL prompts, and its steps, encoded by
    ``rlcore.reward_inputs``; a ``DataError`` naming ``source`` when either cannot be."""
    try:
        return encode_reward_input(render_prompt(prompt, tokenizer, system_prompt)[0], steps, tokenizer)
    except (ChatError, ValueError) as exc:
        raise DataError(f"{source}: {exc}") from None


def reward_batch(encoded: list[RewardInput], *, group_ids: torch.Tensor, rows: list, prompts: list[str],
                 responses: list[str], answers: list[str], scores: torch.Tensor,
                 labels: list[list[float]] | None = None) -> RolloutBatch:
    """Encoded samples as a batch: every response token in ``response_mask``, 1 at the steps' last tokens in
    ``step_mask`` and, with ``labels`` (one per step), those labels there in ``step_labels``. ``rows[i]`` is
    sample ``i``'s data row (its index and metadata); the texts are for logs."""
    lengths = [len(e.response_ids) for e in encoded]
    return RolloutBatch(
        prompt_ids=[e.prompt_ids for e in encoded], response_ids=[e.response_ids for e in encoded],
        response_mask=pad_2d([[1.0] * n for n in lengths]),
        step_mask=pad_2d([step_row(n, e.step_ends) for n, e in zip(lengths, encoded)]),
        step_labels=None if labels is None else
        pad_2d([step_row(n, e.step_ends, y) for n, e, y in zip(lengths, encoded, labels)]),
        group_ids=group_ids, prompt_index=torch.tensor([r.index for r in rows], dtype=torch.long),
        prompts=prompts, responses=responses, answers=answers, truncated=torch.zeros(len(encoded), dtype=torch.bool),
        metadata=[r.metadata for r in rows], scores=scores)


class RewardModelSource:
    """Examples from the data set, a step of ``data.prompts_per_step`` rows; evaluation on held-out rows."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list, eval_rows: list):
        from transformers import AutoTokenizer

        from actors.groups import Shipment

        self.cfg, self.algorithm = cfg, algorithm
        self.actor = roles.learners["actor"]
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        # Evaluation runs on the learners' equal slices: keep a multiple of learner.world_size rows (pairs whole).
        evals = eval_rows[: cfg.data.max_eval_prompts] if cfg.trainer.eval_every > 0 else []
        usable = len(evals) // cfg.learner.world_size * cfg.learner.world_size
        self.eval_batch = Shipment(self.examples(evals[:usable])) if usable else None
        self.ready = []  # no actors of its own

    def encode(self, prompt: Any, steps: list[str], source: str) -> RewardInput:
        return encode_row(prompt, steps, self.tokenizer, self.cfg.data.system_prompt, source)

    def prompt_text(self, prompt: Any) -> str:
        return render_prompt(prompt, self.tokenizer, self.cfg.data.system_prompt)[0]

    def examples(self, rows: list) -> RolloutBatch:
        raise NotImplementedError

    def collect(self, step: int) -> Collected:
        from launch.sources import Collected

        batch = self.examples(self.sampler.batch(step))
        return Collected(batch, self.stats(batch))

    def stats(self, batch: RolloutBatch) -> dict[str, float]:
        return {"response_length/mean": batch.response_mask.sum(-1).mean().item()}

    def sync(self, actor: LearnerGroup, version: int) -> None:
        return None  # no rollout workers to update


class RewardPairSource(RewardModelSource):
    """Preference pairs for an outcome reward model: each row's chosen and rejected response after its prompt,
    chosen first, each response one step (scored at its last token)."""

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[PreferenceRow]:
        """Preference rows (``launch.sources.PreferenceSource.load``) whose responses are strings, as a reward term
        receives them."""
        from launch.sources import PreferenceSource

        rows = PreferenceSource.load(cfg, files)
        dc = cfg.data
        for row in rows:
            for key, reply in ((dc.chosen_key, row.chosen), (dc.rejected_key, row.rejected)):
                if not isinstance(reply, str):
                    raise DataError(f"{row.source}: '{key}' must be a string for a reward model (it scores the "
                                    "response text a reward term receives), got a list of messages")
        return rows

    @classmethod
    def check(cls, cfg: Config, rows: list[PreferenceRow], tokenizer) -> None:
        """Each response encoded once after its prompt, while Ray and the learners start (``launch.build.render``)."""
        for row in rows:
            for reply in (row.chosen, row.rejected):
                encode_row(row.prompt, [reply], tokenizer, cfg.data.system_prompt, row.source)

    def examples(self, rows: list[PreferenceRow]) -> RolloutBatch:
        pairs = [(row, reply) for row in rows for reply in (row.chosen, row.rejected)]  # chosen first
        prompts = [self.prompt_text(row.prompt) for row in rows]
        return reward_batch([self.encode(row.prompt, [reply], row.source) for row, reply in pairs],
                            group_ids=torch.arange(len(rows)).repeat_interleave(2), rows=[row for row, _ in pairs],
                            prompts=[p for p in prompts for _ in (0, 1)], responses=[reply for _, reply in pairs],
                            answers=[row.chosen for row, _ in pairs], scores=torch.tensor([1.0, 0.0] * len(rows)))

    def evaluate(self) -> dict[str, float]:
        """Held-out pairs: ``eval/pairwise_accuracy``, the share ranked chosen first (a tie counts half), and
        ``eval/margin``, the mean chosen minus rejected score."""
        if self.eval_batch is None:
            return {}
        scores = final_scores(self.actor.forward(self.eval_batch, "scores"), self.eval_batch.batch.step_mask)  # [B]
        return {f"eval/{k}": v for k, v in pair_metrics(scores[0::2], scores[1::2]).items()}


class StepLabelSource(RewardModelSource):
    """Step-labelled responses for a process reward model: a label at the last token of every step."""

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[StepRow]:
        """The rows (``rlcore.data.load_step_labels``, by ``algorithm.steps_key`` and ``algorithm.labels_key``)."""
        keys = cfg.algorithm
        if "steps_key" not in keys or "labels_key" not in keys:
            raise ConfigError(f"the step_labels source reads rows by algorithm.steps_key and algorithm.labels_key, "
                            f"which algorithm '{keys['name']}' does not have: use algorithm.name=prm")
        return load_step_labels(files, cfg.data.prompt_key, keys["steps_key"], keys["labels_key"])

    @classmethod
    def check(cls, cfg: Config, rows: list[StepRow], tokenizer) -> None:
        """Each row encoded once, its steps after its prompt, while Ray and the learners start
        (``launch.build.render``)."""
        for row in rows:
            encode_row(row.prompt, row.steps, tokenizer, cfg.data.system_prompt, row.source)

    def examples(self, rows: list[StepRow]) -> RolloutBatch:
        return reward_batch([self.encode(row.prompt, row.steps, row.source) for row in rows],
                            group_ids=torch.arange(len(rows)), rows=rows,
                            prompts=[self.prompt_text(row.prompt) for row in rows],
                            responses=["".join(row.steps) for row in rows],
                            answers=[str(row.metadata.get("answer", "")) for row in rows],  # label_steps writes one
                            scores=torch.tensor([sum(row.labels) / len(row.labels) for row in rows]),  # the good share
                            labels=[row.labels for row in rows])

    def stats(self, batch: RolloutBatch) -> dict[str, float]:
        steps = batch.step_mask.sum(-1)  # [B]
        return {**super().stats(batch), "steps/per_response": steps.mean().item(),
                "steps/label_mean": (batch.step_labels.sum() / steps.sum()).item()}

    def evaluate(self) -> dict[str, float]:
        """Held-out steps, a step predicted good when sigmoid(score) > 0.5 and good when its label is at least 0.5:
        ``eval/step_accuracy``, ``eval/step_f1`` (of the good class) and ``eval/step_positive_rate`` (the share
        predicted good). Rows from ``launch.label_steps`` (with ``correct`` and the prompt's ``index``) also give
        ``eval/outcome_pairwise_accuracy``: how often the last step's score ranks a right response to a problem
        above a wrong one (``rlcore.test_time.within_problem_accuracy``), which is what best-of-N needs."""
        if self.eval_batch is None:
            return {}
        logits, batch = self.actor.forward(self.eval_batch, "scores"), self.eval_batch.batch
        out = {f"eval/{k}": v for k, v in step_metrics(logits, batch.step_labels, batch.step_mask).items()}
        if all("correct" in m and "index" in m for m in batch.metadata):  # rows written by launch.label_steps
            last = batch.step_mask.shape[1] - 1 - batch.step_mask.flip(-1).argmax(-1)  # [B] each last step's end
            final = logits.gather(1, last[:, None])[:, 0]  # [B]
            accuracy, pairs = within_problem_accuracy(final.tolist(), [m["index"] for m in batch.metadata],
                                                      [bool(m["correct"]) for m in batch.metadata])
            if pairs:
                out["eval/outcome_pairwise_accuracy"] = accuracy
        return out
