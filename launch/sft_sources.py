"""Sources of supervised examples (``algorithms/sft.py``); registered in ``launch.sources.SOURCES``.

* ``sft``: prompt/response rows of the data set (``rlcore.data.load_sft``),
  tokenized with ``rlcore.chat.encode_conversation`` (the mask on what the
  assistant wrote). No rollout or reward workers run for training; evaluation
  (``data.eval_files``, SFT rows) gives the held-out loss and, for rows with an
  answer, the greedy accuracy from rollout workers that receive the policy's
  weights only when an evaluation needs them.
* ``sampled_sft``: rejection sampling. The rollout workers sample
  ``rollout.n`` responses per prompt with the policy (synced after every
  update), the reward workers score them, and the algorithm's ``keep`` picks
  the examples; more prompts are drawn, in at most ``max_sampling_rounds()``
  rounds, until the step has ``data.prompts_per_step × group_size()`` of them,
  and a batch still short repeats the ones it has. Examples are trained as
  sampled (the sampler's token ids).
* ``teacher_sft``: the same with a teacher's rollout workers
  (``algorithm.teacher_path``, never updated); its texts are re-tokenized with
  the student's tokenizer. The student is evaluated on rollout workers of its
  own, synced when an evaluation needs them, and ``eval/loss`` is its NLL of the
  teacher's greedy responses to the eval prompts.

A step's examples are each a group of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from algorithms.sft import fill
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.chat import (
    ChatError,
    encode_conversation,
    encode_prompt,
    prompt_messages,
    render_prompt,
    reply_text,
    user_text,
)
from rlcore.config import Config
from rlcore.data import (
    DataError,
    PromptRow,
    PromptSampler,
    SFTRow,
    load_prompts,
    load_sft,
)
from rlcore.tools import load_toolbox

if TYPE_CHECKING:  # the groups import Ray, which the composition root must not import before Ray is set up
    from actors.groups import LearnerGroup
    from launch.sources import Collected, Roles

# launch.sources registers these classes, so its helpers (Collected, timed, reward_stats, greedy_eval) are imported where used.


def encode_example(prompt: Any, templated: bool, response: Any, tokenizer,
                   system_prompt: str | None) -> tuple[list[int], list[int], list[float]]:
    """``(prompt_ids, response_ids, response_mask)`` of a prompt and the response to learn.

    A prompt already rendered by the chat template (``PromptRow.templated``) is encoded as the rollout workers
    encode it, and the response closes the assistant turn with the EOS (end-of-turn) token; otherwise
    ``rlcore.chat.encode_conversation`` does it all.
    """
    if isinstance(prompt, str) and templated:
        response_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
        return encode_prompt(prompt, True, tokenizer), response_ids, [1.0] * len(response_ids)
    return encode_conversation(prompt, response, tokenizer, system_prompt)


def example_batch(rows: list, encoded: list[tuple[list[int], list[int], list[float]]], tokenizer) -> RolloutBatch:
    """SFT examples as a batch, each a group of its own; ``scores`` 0 (nothing scored them)."""
    size = len(rows)
    return RolloutBatch(
        prompt_ids=[p for p, _, _ in encoded], response_ids=[r for _, r, _ in encoded],
        response_mask=pad_2d([m for _, _, m in encoded]), group_ids=torch.arange(size),
        prompt_index=torch.tensor([row.index for row in rows], dtype=torch.long),
        prompts=[tokenizer.decode(p) for p, _, _ in encoded],
        responses=[reply_text(row.response) if isinstance(row, SFTRow) else tokenizer.decode(r)
                   for row, (_, r, _) in zip(rows, encoded)],
        answers=[row.answer for row in rows], truncated=torch.zeros(size, dtype=torch.bool),
        metadata=[row.metadata for row in rows], scores=torch.zeros(size))


def sft_examples(rows: list[SFTRow], tokenizer, system_prompt: str | None, tools: list[dict] | None) -> RolloutBatch:
    """SFT rows tokenized and masked (``SFTSource.encode``) as a batch of examples (``example_batch``)."""
    return example_batch(rows, [SFTSource.encode(row, tokenizer, system_prompt, tools) for row in rows], tokenizer)


def prompt_row(row: SFTRow, tokenizer, system_prompt: str | None, tools: list[dict] | None = None) -> PromptRow:
    """The row's prompt, rendered as the rollout workers generate from it (with the ``env`` section's ``tools``),
    with its answer."""
    text, templated = render_prompt(row.prompt, tokenizer, system_prompt, tools)
    messages = prompt_messages(row.prompt, system_prompt, tools) if tools is not None else None
    return PromptRow(row.index, text, row.answer, source=row.source, metadata=row.metadata, templated=templated,
                     user_prompt=user_text(row.prompt), messages=messages)


def heldout_loss(actor: LearnerGroup, shipment) -> float:
    """Token-mean negative log-likelihood of the shipped examples under the actor's current weights."""
    mask = shipment.batch.response_mask
    return (-(actor.forward(shipment, "logprobs") * mask).sum() / mask.sum().clamp(min=1)).item()


def shippable(batch: RolloutBatch, world_size: int):
    """The batch's first samples, a multiple of ``world_size`` of them (the learners' equal slices), shipped; None if
    there are none."""
    from actors.groups import Shipment

    usable = len(batch) // world_size * world_size
    return Shipment(batch.select(range(usable))) if usable else None


class EvalRollout:
    """Rollout and reward workers that evaluate the policy by greedy decoding, and nothing else.

    ``sync`` is called after every update but only remembers the weights' version;
    they are pushed to the workers when an evaluation needs them.
    """

    def __init__(self, cfg: Config, roles: Roles):
        from actors.groups import RewardGroup, RolloutGroup

        self.accuracy_term = cfg.reward.accuracy_term
        self.env = roles.env_pool(cfg)
        self.rollout = RolloutGroup(cfg, cfg.model.path, env=self.env.client if self.env else None)
        self.rewards = RewardGroup(roles.reward_terms)
        self.ready = self.rollout.ready + self.rewards.ready + (self.env.ready if self.env else [])
        self.pending: tuple[LearnerGroup, int] | None = None

    def sync(self, actor: LearnerGroup, version: int) -> None:
        self.pending = (actor, version)

    def evaluate(self, rows: list[PromptRow]) -> dict[str, float]:
        if self.pending is not None:
            actor, version = self.pending
            self.rollout.update_weights(actor.state_dict_ref(), version)
            self.pending = None
        from launch.sources import greedy_eval

        return greedy_eval(self.rollout, self.rewards, rows, self.accuracy_term)


class SFTSource:
    """Prompt/response rows of the data set, tokenized with the chat template; the loss on what the assistant wrote."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list[SFTRow], eval_rows: list[SFTRow]):
        from transformers import AutoTokenizer

        self.cfg, self.algorithm = cfg, algorithm
        self.actor = roles.learners["actor"]
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.tools = roles.tools
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        evals = eval_rows[: cfg.data.max_eval_prompts] if cfg.trainer.eval_every > 0 else []
        self.eval_batch = shippable(self.examples(evals), cfg.learner.world_size) if evals else None
        self.eval_prompts = [prompt_row(r, self.tokenizer, cfg.data.system_prompt, self.tools) for r in evals
                             if r.answer is not None]
        self.eval_rollout = EvalRollout(cfg, roles) if self.eval_prompts else None
        self.ready = self.eval_rollout.ready if self.eval_rollout else []

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[SFTRow]:
        """The rows (``rlcore.data.load_sft``)."""
        return load_sft(files, cfg.data)

    @classmethod
    def check(cls, cfg: Config, rows: list[SFTRow], tokenizer) -> None:
        """Each row tokenized once, while Ray and the learners start (``launch.build.render``), so a row the chat
        template cannot render stops the run before its first step, in one line naming its file and line."""
        tools = load_toolbox(cfg.env).schemas if cfg.env.enabled else None
        for row in rows:
            cls.encode(row, tokenizer, cfg.data.system_prompt, tools)

    @staticmethod
    def encode(row: SFTRow, tokenizer, system_prompt: str | None,
               tools: list[dict] | None = None) -> tuple[list[int], list[int], list[float]]:
        """A row tokenized and masked (``rlcore.chat.encode_conversation``); with ``tools`` (an ``env`` section's
        schemas) its prompt lists them as the episodes' prompts will."""
        try:
            return encode_conversation(row.prompt, row.response, tokenizer, system_prompt, tools)
        except ChatError as exc:
            raise DataError(f"{row.source}: {exc}") from None

    def examples(self, rows: list[SFTRow]) -> RolloutBatch:
        return sft_examples(rows, self.tokenizer, self.cfg.data.system_prompt, self.tools)

    def collect(self, step: int) -> Collected:
        from launch.sources import Collected

        batch = self.examples(self.sampler.batch(step))
        lengths = batch.response_mask.sum(-1)
        return Collected(batch, {"sft/tokens": float(lengths.sum()), "response_length/mean": lengths.mean().item(),
                                 "sequence_length/mean": sum(map(len, batch.prompt_ids + batch.response_ids))
                                 / len(batch)})

    def evaluate(self) -> dict[str, float]:
        """``eval/loss``: the held-out examples' token-mean NLL; ``eval/accuracy`` (and reward, length): greedy
        responses to the prompts of the held-out rows that have an answer, scored by the reward terms."""
        metrics = {}
        if self.eval_batch is not None:
            metrics["eval/loss"] = heldout_loss(self.actor, self.eval_batch)
        if self.eval_rollout is not None:
            metrics.update(self.eval_rollout.evaluate(self.eval_prompts))
        return metrics

    def sync(self, actor: LearnerGroup, version: int) -> None:
        if self.eval_rollout is not None:
            self.eval_rollout.sync(actor, version)


class SampledSFTSource:
    """The policy's own samples that the algorithm keeps (``keep``: the correct ones), as SFT examples."""

    stats_prefix = ""
    """Prefix of the sampled batch's reward and length metrics."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list[PromptRow], eval_rows: list[PromptRow]):
        from transformers import AutoTokenizer

        from actors.groups import RewardGroup, RolloutGroup

        self.cfg, self.algorithm = cfg, algorithm
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        self.rows = {row.index: row for row in rows}
        self.eval_rows = eval_rows[: cfg.data.max_eval_prompts] if cfg.trainer.eval_every > 0 else []
        self.rewards = RewardGroup(roles.reward_terms)
        self.rollout = RolloutGroup(cfg, self.sampler_path())
        self.ready = self.rollout.ready + self.rewards.ready

    def sampler_path(self) -> str:
        """The model the rollout workers sample with: the policy."""
        return self.cfg.model.path

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[PromptRow]:
        return load_prompts(files, cfg.data.prompt_key, cfg.data.answer_key)

    def examples(self, batch: RolloutBatch, rows: dict[int, PromptRow]) -> RolloutBatch:
        """Kept samples (of ``rows``, by index) as SFT examples: the sampler's tokens as they are. Without the sampler's log-probs (at
        ``rollout.temperature``), which the untempered learners' log-probs are not to be compared with."""
        batch.rollout_logprobs = None
        return batch

    def collect(self, step: int) -> Collected:
        """Generate, score and keep until the step has ``data.prompts_per_step × group_size()`` examples.

        Round ``draw`` of step ``step`` draws its own prompts (``PromptSampler.batch(step, draw)``) and sampling
        seed, so a resumed run repeats it; a batch short after the last round repeats its examples in order.
        """
        from launch.sources import Collected, reward_stats, sampling_seed, timed

        size = self.cfg.data.prompts_per_step * self.algorithm.group_size()
        stats: dict[str, float] = {}
        parts, first, generated, tokens, passed, kept = [], None, 0, 0, 0, 0
        for draw in range(self.algorithm.max_sampling_rounds()):
            seed = sampling_seed(self.cfg.trainer.seed, step, draw)
            with timed(stats, "time/rollout"):
                batch = self.rollout.generate(self.sampler.batch(step, draw), self.cfg.rollout.n, seed)
            with timed(stats, "time/reward"):
                for key, value in self.rewards.score(batch).items():
                    stats[key] = stats.get(key, 0.0) + value
            first = batch if first is None else first
            generated, tokens = generated + len(batch), tokens + batch.num_response_tokens
            passed += int(self.algorithm.passes(batch).sum())
            keep = self.algorithm.keep(batch)
            if keep:
                parts.append(self.examples(batch.select(keep), self.rows))
                kept += len(keep)
            if kept >= size:
                break
        if not parts:
            raise RuntimeError(f"step {step}: none of the {generated} samples of {draw + 1} sampling rounds passed "
                               "the filter; raise algorithm.max_sampling_rounds, or start from a policy that solves "
                               "some prompts (sft)")
        pool = RolloutBatch.concat(parts)
        batch = pool.select(fill(len(pool), size))
        batch.group_ids = torch.arange(size)  # every example (a repeat too) a group of its own
        stats.update({f"{self.stats_prefix}{k}": v for k, v in reward_stats(first, self.cfg.reward.accuracy_term).items()})
        stats.update({"sampling/rounds": draw + 1, "sampling/passed_frac": passed / generated,
                      "sampling/kept_frac": kept / generated, "sampling/repeated": max(0, size - kept),
                      "sft/tokens": float(batch.num_response_tokens),
                      "throughput/rollout_tokens_per_s": tokens / max(stats["time/rollout"], 1e-9)})
        return Collected(batch, stats)

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy, reward and response length on the eval prompts, by the (synced) rollout workers."""
        if not self.eval_rows:
            return {}
        from launch.sources import greedy_eval

        return greedy_eval(self.rollout, self.rewards, self.eval_rows, self.cfg.reward.accuracy_term)

    def sync(self, actor: LearnerGroup, version: int) -> None:
        self.rollout.update_weights(actor.state_dict_ref(), version)


class TeacherSFTSource(SampledSFTSource):
    """A teacher's samples (``algorithm.teacher_path``, never updated), re-tokenized with the student's tokenizer,
    as SFT examples; the algorithm's ``keep`` may ask for the correct ones only."""

    stats_prefix = "teacher/"

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list[PromptRow], eval_rows: list[PromptRow]):
        super().__init__(cfg, algorithm, roles, rows, eval_rows)
        self.actor = roles.learners["actor"]
        self.student = EvalRollout(cfg, roles) if self.eval_rows else None
        self.ready = self.ready + (self.student.ready if self.student else [])
        self.eval_batch = None  # the teacher's greedy responses to the eval prompts, made at the first evaluation
        self.teacher_eval: dict[str, float] = {}

    def sampler_path(self) -> str:
        return self.algorithm.teacher_path

    def examples(self, batch: RolloutBatch, rows: dict[int, PromptRow]) -> RolloutBatch:
        """The teacher's response texts after the student's encoding of their prompts (``encode_example``)."""
        prompts = [rows[int(i)] for i in batch.prompt_index]
        encoded = [encode_example(row.prompt, row.templated, text, self.tokenizer, self.cfg.data.system_prompt)
                   for row, text in zip(prompts, batch.responses)]
        return RolloutBatch(
            prompt_ids=[p for p, _, _ in encoded], response_ids=[r for _, r, _ in encoded],
            response_mask=pad_2d([m for _, _, m in encoded]), group_ids=batch.group_ids,
            prompt_index=batch.prompt_index, prompts=batch.prompts, user_prompts=batch.user_prompts,
            responses=batch.responses,
            answers=batch.answers, truncated=batch.truncated, metadata=batch.metadata, scores=batch.scores,
            reward_terms=batch.reward_terms)  # no policy version: not the policy's samples, never stale

    def evaluate(self) -> dict[str, float]:
        """The student's greedy accuracy on the eval prompts and ``eval/loss``, its token-mean NLL of the teacher's
        greedy responses to them (``eval/teacher_accuracy``: theirs)."""
        if not self.eval_rows:
            return {}
        if not self.teacher_eval:
            from launch.sources import reward_stats

            teacher = self.rollout.generate(self.eval_rows, n=1, greedy=True)
            self.rewards.score(teacher)
            self.teacher_eval = {"eval/teacher_accuracy":
                                 reward_stats(teacher, self.cfg.reward.accuracy_term).get("accuracy", 0.0)}
            ended = (~teacher.truncated).nonzero().flatten().tolist()
            if ended:
                examples = self.examples(teacher.select(ended), {row.index: row for row in self.eval_rows})
                self.eval_batch = shippable(examples, self.cfg.learner.world_size)
        metrics = dict(self.teacher_eval)
        if self.eval_batch is not None:
            metrics["eval/loss"] = heldout_loss(self.actor, self.eval_batch)
        metrics.update(self.student.evaluate(self.eval_rows))
        return metrics

    def sync(self, actor: LearnerGroup, version: int) -> None:
        if self.student is not None:
            self.student.sync(actor, version)
