"""Where a step's batch comes from: the policy's own samples, or a preference data set.

The driver asks its source for a scored batch each step, for an evaluation,
and to take new weights; the algorithm's ``uses_rollout`` picks the source.

* ``RolloutSource``: rollout workers generate ``rollout.n`` samples per prompt,
  reward workers score them, and the algorithm shapes and filters the groups;
  with a filter (DAPO dynamic sampling, online DPO) it samples more prompts
  until ``data.prompts_per_step`` groups pass.
* ``PreferenceSource``: chosen/rejected pairs from the data set (offline DPO);
  no rollout or reward workers run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from actors.groups import ReferenceGroup, RewardGroup, RolloutGroup, LearnerGroup
from algorithms.advantages import zero_variance_groups
from algorithms.base import Algorithm
from rlcore.batch import RolloutBatch, group_runs, pad_2d
from rlcore.config import Config
from rlcore.data import PreferenceRow, PromptRow, PromptSampler


@dataclass
class Collected:
    batch: RolloutBatch
    """What the learners train on."""
    scored: RolloutBatch
    """The first round as sampled and scored, before any filter: what reward and accuracy metrics describe."""
    prompt_indices: list[int]
    """Data-set index of each trained group's prompt, in batch order."""
    stats: dict[str, float] = field(default_factory=dict)


@contextmanager
def timed(timings: dict[str, float], name: str):
    """Add the block's wall time to ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def accuracy(cfg: Config, batch: RolloutBatch) -> float:
    return (batch.reward_terms[cfg.reward.accuracy_term] >= 1.0).float().mean().item()


class RolloutSource:
    def __init__(self, cfg: Config, model_path: str, algorithm: Algorithm, rows: list[PromptRow],
                 eval_rows: list[PromptRow]):
        self.cfg, self.algorithm = cfg, algorithm
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        self.eval_rows = eval_rows[: cfg.data.max_eval_prompts]
        self.rewards = RewardGroup(cfg)
        self.rollout = RolloutGroup(cfg, model_path)

    def collect(self, step: int, timings: dict[str, float]) -> Collected:
        """Generate and score until ``prompts_per_step`` groups pass the algorithm's filter.

        Extra rounds draw extra prompts (``PromptSampler.batch(step, draw)``), so
        a resumed run repeats them. If ``algorithm.max_sampling_rounds`` run out
        first, kept groups are repeated to fill the batch (``sampling/filled_groups``).
        """
        per_step, cap = self.cfg.data.prompts_per_step, self.cfg.algorithm.max_sampling_rounds
        kept, dropped, prompt_of, scored, faults = [], [], {}, None, {}
        for draw in range(cap):
            prompts = self.sampler.batch(step, draw)
            first_group = ((step - 1) * cap + draw) * per_step  # unique across steps and draws
            prompt_of.update({first_group + i: p.index for i, p in enumerate(prompts)})
            with timed(timings, "rollout"):
                batch = self.rollout.generate(prompts, list(range(first_group, first_group + per_step)),
                                              self.cfg.rollout.n)
            with timed(timings, "reward"):
                for key, value in self.rewards.score(batch).items():
                    faults[key] = faults.get(key, 0.0) + value
            self.algorithm.shape_rewards(batch)
            scored = scored or batch
            keep, drop = self.algorithm.filter_groups(batch)
            kept += _groups(keep)
            dropped += _groups(drop) if drop is not None else []
            if len(kept) >= per_step:
                break
        pool = kept or dropped
        if not pool:
            raise RuntimeError(f"step {step}: no usable group in {cap} sampling rounds; raise "
                               "algorithm.max_sampling_rounds or check that the reward can tell samples apart")
        filled = max(0, per_step - len(kept))
        groups = (kept + [_renumbered(pool[i % len(pool)], i + 1) for i in range(filled)])[:per_step]
        batch = RolloutBatch.concat(groups)
        stats = {**faults, "sampling/rounds": draw + 1, "sampling/dropped_groups": len(dropped), "sampling/filled_groups": filled,
                 "sampling/zero_variance_groups": len(_groups(batch.select(
                     zero_variance_groups(batch.scores, batch.group_ids).nonzero().flatten())))}
        indices = [prompt_of[g % 10**12] for g in dict.fromkeys(batch.group_ids.tolist())]
        return Collected(batch, scored, indices, stats)

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy and reward on the eval prompts."""
        if not self.eval_rows:
            return {}
        batch = self.rollout.generate(self.eval_rows, list(range(len(self.eval_rows))), n=1, greedy=True)
        self.rewards.score(batch)
        return {"eval/accuracy": accuracy(self.cfg, batch), "eval/reward": batch.scores.mean().item(),
                "eval/response_length": batch.response_mask.sum(-1).mean().item()}

    def update_weights(self, learners: LearnerGroup, version: int) -> None:
        self.rollout.update_weights(learners.state_dict_ref(), version)


def _groups(batch: RolloutBatch) -> list[RolloutBatch]:
    """Split a batch into its groups (runs of equal consecutive group ids)."""
    return [batch.select(range(a, b)) for a, b in group_runs(batch.group_ids.tolist())]


def _renumbered(group: RolloutBatch, copy: int) -> RolloutBatch:
    """A repeated group under a fresh id (``copy × 10**12`` above the original), so group statistics stay per copy."""
    group = group.select(range(len(group)))
    group.group_ids = group.group_ids + copy * 10**12
    return group


class PreferenceSource:
    """Chosen/rejected pairs from the data set, tokenized here, chosen first in each pair."""

    def __init__(self, cfg: Config, model_path: str, rows: list[PreferenceRow], eval_rows: list[PreferenceRow],
                 learners: LearnerGroup, reference: ReferenceGroup):
        from transformers import AutoTokenizer

        self.cfg, self.learners, self.reference = cfg, learners, reference
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        # Evaluation runs on the learners' equal slices: keep a multiple of learner.world_size pairs.
        usable = len(eval_rows[: cfg.data.max_eval_prompts]) // cfg.learner.world_size * cfg.learner.world_size
        self.eval_batch = self.pairs(eval_rows[:usable]) if usable else None

    def pairs(self, rows: list[PreferenceRow]) -> RolloutBatch:
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        prompt_ids, responses, texts = [], [], []
        for row in rows:
            ids = tok.encode(row.prompt)
            for text in (row.chosen, row.rejected):
                prompt_ids.append(ids)
                responses.append(tok.encode(text) + [eos])
                texts.append(text)
        size = len(responses)
        return RolloutBatch(
            prompt_ids=prompt_ids, response_ids=responses,
            group_ids=torch.tensor([r.index for r in rows for _ in (0, 1)]),
            rollout_logprobs=pad_2d([[0.0] * len(r) for r in responses]),
            response_mask=pad_2d([[1.0] * len(r) for r in responses]),
            policy_version=torch.zeros(size, dtype=torch.long),
            prompts=[r.prompt for r in rows for _ in (0, 1)], responses=texts,
            answers=[r.chosen for r in rows for _ in (0, 1)], truncated=torch.zeros(size, dtype=torch.bool),
            metadata=[{} for _ in range(size)],
            scores=torch.tensor([1.0, 0.0] * len(rows)), reward_terms={"preference": torch.tensor([1.0, 0.0] * len(rows))},
        )

    def collect(self, step: int, timings: dict[str, float]) -> Collected:
        rows = self.sampler.batch(step)
        batch = self.pairs(rows)
        return Collected(batch, batch, [r.index for r in rows])

    def evaluate(self) -> dict[str, float]:
        """Preference accuracy on held-out pairs: does the implicit reward β·(logp − ref) rank chosen first?"""
        if self.eval_batch is None:
            return {}
        batch, beta = self.eval_batch, self.cfg.algorithm.dpo_beta
        implicit = beta * ((self.learners.logprobs(batch) - self.reference.logprobs(batch)) * batch.response_mask).sum(-1)
        margin = implicit[0::2] - implicit[1::2]  # [pairs]
        ranked = (margin > 0).float() + 0.5 * (margin == 0).float()  # a tie is a coin flip
        return {"eval/preference_accuracy": ranked.mean().item(), "eval/margin": margin.mean().item()}

    def update_weights(self, learners: LearnerGroup, version: int) -> None:
        return None  # no rollout workers to update
