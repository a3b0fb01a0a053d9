"""Where a step's batch comes from: source plug-ins. An algorithm names its source (``Algorithm.source``).

A source is a class with

* ``load(cfg, files) -> rows`` (classmethod), before Ray starts: read and
  validate its data without a tokenizer (errors name the file and row);
* ``check(cfg, rows, tokenizer)`` (classmethod, optional), while Ray and the
  learners start and before the source's actors do: the checks that need the
  tokenizer (an error stops the run before its first step, in one line);
* ``__init__(cfg, algorithm, roles, rows, eval_rows)``: ``roles`` holds the
  built parts it may use (reward terms, learner groups, the reference); it
  starts its own actors without waiting and lists in ``ready`` what to wait
  on (``actors.groups.wait_ready``), so they start alongside the other roles;
* ``collect(step) -> Collected``: the step's batch and the source's own stats.
  With ``rollout.max_staleness > 0`` it runs in a thread of its own, for steps
  ahead of the learners, while the main thread calls ``sync`` and ``evaluate``;
* ``evaluate() -> metrics`` and ``sync(actor, version)``: take the policy's new
  weights.

Built in:

* ``rollout``: rollout workers generate ``rollout.n`` samples per prompt,
  reward workers score them, and the algorithm shapes and filters the groups;
  with a filter (DAPO dynamic sampling, online DPO) it samples more prompts
  until ``data.prompts_per_step`` groups pass.
* ``preferences``: chosen/rejected pairs from the data set (offline DPO); no
  rollout or reward workers run.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from algorithms.advantages import zero_variance_groups
from rewards.api import RewardTerm
from rlcore.batch import RolloutBatch, group_runs, pad_2d
from rlcore.chat import encode_conversation, render_prompt, reply_text
from rlcore.config import Config
from rlcore.data import PreferenceRow, PromptRow, PromptSampler, load_preferences, load_prompts
from rlcore.episode import FAULTS
from rlcore.plugins import Registry

if TYPE_CHECKING:  # the groups import Ray, which the composition root must not import before Ray is set up
    from actors.groups import EnvPool, LearnerGroup, ReferenceGroup, ReferenceInPolicy
    from actors.placement import Colocated, Separate


@dataclass
class Roles:
    """The built parts a source may use."""

    reward_terms: list[RewardTerm]
    learners: dict[str, LearnerGroup]
    reference: ReferenceGroup | ReferenceInPolicy | None
    place: Separate | Colocated | None = None
    """Where the rollout workers run and how weights reach them (``trainer.placement``); None: separate."""
    tools: list[dict] | None = None
    """With an ``env`` section: the tools' JSON schemas (``launch.build.Plan.tools``), for multi-turn episodes."""
    ship_environments: bool = False
    """A reward reads the episodes' environment instances (``launch.build.Plan.ship_environments``)."""

    def env_pool(self, cfg: Config) -> EnvPool | None:
        """The env actors of multi-turn episodes, started (not waited for); None without an ``env`` section."""
        from actors.groups import EnvPool

        return EnvPool(cfg.env, self.tools or [], self.ship_environments) if cfg.env.enabled else None


@dataclass
class Collected:
    batch: RolloutBatch
    """What the learners train on."""
    stats: dict[str, float] = field(default_factory=dict)
    """The source's metrics for the step: rewards, lengths, sampling, its own timings."""

    def summary(self, shown: int = 4) -> dict[str, Any]:
        """What the step trained on: every group's prompt index in the data set, and a few samples to read (a
        multi-turn episode's with its whole conversation: tool calls and answers)."""
        b = self.batch
        samples = [{"prompt": b.prompts[i], "response": b.responses[i], "answer": b.answers[i],
                    "score": round(b.scores[i].item(), 4),
                    **({"messages": b.messages[i]} if b.messages is not None else {})} for i in range(min(shown, len(b)))]
        return {"prompt_indices": [int(b.prompt_index[a]) for a, _ in group_runs(b.group_ids.tolist())],
                "samples": samples}


@contextmanager
def timed(timings: dict[str, float], name: str):
    """Add the block's wall time to ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def sampling_seed(seed: int, step: int, draw: int = 0) -> int:
    """The sampling seed of round ``draw`` of step ``step`` in a run seeded ``seed`` (``trainer.seed``): the same
    on a resumed run, different for every step and round."""
    return random.Random(f"{seed}/{step}/{draw}").getrandbits(31)


def reward_stats(batch: RolloutBatch, accuracy_term: str) -> dict[str, float]:
    """Rewards (total, each term and part), accuracy and response lengths of a scored batch."""
    lengths = batch.response_mask.sum(-1)
    stats = {"reward/mean": batch.scores.mean().item(),
             "reward/std": batch.scores.std().item() if len(batch) > 1 else 0.0,
             "response_length/mean": lengths.mean().item(), "response_length/max": lengths.max().item(),
             "response_length/truncated_frac": batch.truncated.float().mean().item(),
             **{f"reward/{name}": v.nanmean().item() for name, v in batch.reward_terms.items()}}  # NaN: not applicable
    if batch.thinking_tokens is not None and bool((batch.thinking_tokens >= 0).any()):
        thinking = batch.thinking_tokens[batch.thinking_tokens >= 0].float()
        stats.update({"response_length/thinking_mean": thinking.mean().item(),
                      "response_length/thinking_frac": (batch.thinking_tokens >= 0).float().mean().item()})
    if accuracy_term in batch.reward_terms:
        stats["accuracy"] = (batch.reward_terms[accuracy_term] >= 1.0).float().mean().item()
    if batch.episode_stats:
        stats.update(episode_metrics(batch))
    return stats


def episode_metrics(batch: RolloutBatch) -> dict[str, float]:
    """What multi-turn episodes did (``RolloutBatch.episode_stats``): turns and tool calls per episode, the share of
    episodes that called a tool and of calls that worked, fault counts, model and environment tokens per episode,
    episodes cut by a budget, the environments' own scores, and the rollout's time waiting on the env actors."""
    s = batch.episode_stats
    calls = s["tool_calls"].sum().item()
    failed = (s["tool_errors"] + s["tool_timeouts"] + s["malformed_calls"]).sum().item()
    out = {"env/turns/mean": s["turns"].mean().item(), "env/tool_calls/mean": s["tool_calls"].mean().item(),
           "env/tool_call_frac": (s["tool_calls"] > 0).float().mean().item(),
           "env/valid_call_frac": (calls - failed) / calls if calls else 0.0,
           "env/truncated_frac": batch.truncated.float().mean().item(),
           "response_length/model_tokens/mean": s["model_tokens"].mean().item(),
           "response_length/env_tokens/mean": s["env_tokens"].mean().item(),
           "time/env": s["env_seconds"].sum().item(),
           **{f"env/{k}": s[k].sum().item() for k in FAULTS}}
    returns = batch.env_returns[~batch.env_returns.isnan()]
    if len(returns):
        out["env/return/mean"] = returns.mean().item()
    return out


def greedy_eval(rollout, rewards, rows: list[PromptRow], accuracy_term: str) -> dict[str, float]:
    """Greedy responses to ``rows``, scored: ``eval_metrics``."""
    return eval_metrics(greedy_batch(rollout, rewards, rows), accuracy_term)


def greedy_batch(rollout, rewards, rows: list[PromptRow]) -> RolloutBatch:
    """One greedy response to each of ``rows``, scored by ``rewards``."""
    batch = rollout.generate(rows, n=1, greedy=True)
    rewards.score(batch)
    return batch


def eval_metrics(batch: RolloutBatch, accuracy_term: str) -> dict[str, float]:
    """A scored evaluation batch's ``eval/accuracy``, ``eval/reward`` (the weighted total), ``eval/reward/<term>`` for
    every term and logged part (``eval/reward/l1/abs_deviation``), ``eval/response_length`` and, where responses
    think in ``<think>…</think>``, ``eval/thinking_length``."""
    stats = reward_stats(batch, accuracy_term)
    out = {"eval/accuracy": stats.get("accuracy", 0.0), "eval/reward": stats["reward/mean"],
           "eval/response_length": stats["response_length/mean"]}
    out.update({f"eval/reward/{name}": v.nanmean().item() for name, v in batch.reward_terms.items()})
    if "response_length/thinking_mean" in stats:
        out["eval/thinking_length"] = stats["response_length/thinking_mean"]
    return out


def groups_of(batch: RolloutBatch | None) -> list[RolloutBatch]:
    """A batch split into its groups (runs of equal consecutive group ids)."""
    return [] if batch is None else [batch.select(range(a, b)) for a, b in group_runs(batch.group_ids.tolist())]


class RolloutSource:
    """The policy's own samples, scored by the reward workers."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list[PromptRow], eval_rows: list[PromptRow]):
        from actors.groups import RewardGroup, RolloutGroup
        from actors.placement import SEPARATE

        self.cfg, self.algorithm = cfg, algorithm
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        self.eval_rows = eval_rows[: cfg.data.max_eval_prompts]
        self.rewards = RewardGroup(roles.reward_terms)
        self.place = roles.place or SEPARATE
        self.env = roles.env_pool(cfg)
        self.rollout = RolloutGroup(cfg, cfg.model.path, self.place, self.env.client if self.env else None)
        self.ready = self.rollout.ready + self.rewards.ready + (self.env.ready if self.env else [])

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[PromptRow]:
        return load_prompts(files, cfg.data.prompt_key, cfg.data.answer_key)

    def collect(self, step: int) -> Collected:
        """Generate and score until ``prompts_per_step`` groups pass the algorithm's filter.

        Round ``draw`` of step ``step`` draws its own prompts (``PromptSampler.batch(step, draw)``)
        and sampling seed, so a resumed run repeats it. If the rounds run out first,
        kept groups are repeated to fill the batch (``sampling/filled_groups``).
        """
        per_step, stats = self.cfg.data.prompts_per_step, {}
        kept, dropped, first, generated = [], [], None, 0
        for draw in range(self.algorithm.max_sampling_rounds()):
            seed = sampling_seed(self.cfg.trainer.seed, step, draw)
            with timed(stats, "time/rollout"):
                batch = self.rollout.generate(self.sampler.batch(step, draw), self.cfg.rollout.n, seed)
            generated += batch.num_response_tokens
            with timed(stats, "time/reward"):
                for key, value in self.rewards.score(batch).items():
                    stats[key] = stats.get(key, 0.0) + value
            self.algorithm.shape_rewards(batch)
            first = batch if first is None else first
            keep, drop = self.algorithm.filter_groups(batch)
            kept, dropped = kept + groups_of(keep), dropped + groups_of(drop)
            if len(kept) >= per_step:
                break
        pool = kept or dropped
        if not pool:
            raise RuntimeError(f"step {step}: no usable group in {draw + 1} sampling rounds; check that the "
                               "reward can tell samples apart")
        filled = max(0, per_step - len(kept))
        batch = RolloutBatch.concat((kept + [pool[i % len(pool)] for i in range(filled)])[:per_step])
        flat = zero_variance_groups(batch.scores, batch.group_ids)  # [B]
        self.place.rest(self.rollout)  # colocated: vLLM frees the GPUs until the weight sync
        stats.update(reward_stats(first, self.cfg.reward.accuracy_term))  # the first round, as sampled
        stats.update({"sampling/rounds": draw + 1, "sampling/dropped_groups": len(dropped),
                      "sampling/filled_groups": filled,
                      "sampling/zero_variance_groups": len(groups_of(batch.select(flat.nonzero().flatten()))),
                      "throughput/rollout_tokens_per_s": generated / max(stats["time/rollout"], 1e-9),
                      **{f"faults/rollout/{k}": float(v) for k, v in self.rollout.faults.items()}})  # since the start
        return Collected(batch, stats)

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy and reward on the eval prompts."""
        if not self.eval_rows:
            return {}
        return greedy_eval(self.rollout, self.rewards, self.eval_rows, self.cfg.reward.accuracy_term)

    def sync(self, actor: LearnerGroup, version: int) -> None:
        self.place.push(actor, self.rollout, version)


class PreferenceSource:
    """Chosen/rejected pairs from the data set, tokenized here, chosen first in each pair."""

    def __init__(self, cfg: Config, algorithm, roles: Roles, rows: list[PreferenceRow],
                 eval_rows: list[PreferenceRow]):
        from transformers import AutoTokenizer

        from actors.groups import Shipment

        self.cfg, self.algorithm = cfg, algorithm
        self.actor, self.reference = roles.learners["actor"], roles.reference
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        # Evaluation runs on the learners' equal slices: keep a multiple of learner.world_size pairs.
        usable = len(eval_rows[: cfg.data.max_eval_prompts]) // cfg.learner.world_size * cfg.learner.world_size
        self.eval_batch = Shipment(self.pairs(eval_rows[:usable])) if usable else None
        self.ready = []  # no actors of its own

    @classmethod
    def load(cls, cfg: Config, files: list[str]) -> list[PreferenceRow]:
        dc = cfg.data
        return load_preferences(files, dc.prompt_key, dc.chosen_key, dc.rejected_key)

    def pairs(self, rows: list[PreferenceRow]) -> RolloutBatch:
        """Each row's chosen and rejected response after its prompt (``rlcore.chat.encode_conversation``).

        Strings with no ``data.system_prompt``: the prompt and the response encoded as
        they are, then EOS, every response token trained. Message lists (or a system
        prompt): the chat template, with the mask on the assistant's own tokens only.
        """
        tok, system = self.tokenizer, self.cfg.data.system_prompt
        prompt_ids, responses, masks, texts = [], [], [], []
        for row in rows:
            for reply in (row.chosen, row.rejected):
                ids, response, mask = encode_conversation(row.prompt, reply, tok, system)
                prompt_ids.append(ids)
                responses.append(response)
                masks.append(mask)
                texts.append(reply_text(reply))
        size = len(responses)
        preferred = torch.tensor([1.0, 0.0] * len(rows))
        prompts = [render_prompt(r.prompt, tok, system)[0] for r in rows]  # strings, for logs and samples
        return RolloutBatch(
            prompt_ids=prompt_ids, response_ids=responses, response_mask=pad_2d(masks),
            group_ids=torch.arange(len(rows)).repeat_interleave(2),
            prompt_index=torch.tensor([r.index for r in rows]).repeat_interleave(2),
            prompts=[p for p in prompts for _ in (0, 1)], responses=texts,
            answers=[reply_text(r.chosen) for r in rows for _ in (0, 1)],
            truncated=torch.zeros(size, dtype=torch.bool),
            metadata=[r.metadata for r in rows for _ in (0, 1)],
            scores=preferred, reward_terms={"preference": preferred},
        )

    def collect(self, step: int) -> Collected:
        batch = self.pairs(self.sampler.batch(step))
        return Collected(batch, {"response_length/mean": batch.response_mask.sum(-1).mean().item()})

    def evaluate(self) -> dict[str, float]:
        """Preference accuracy on held-out pairs: does the log-ratio to the reference (DPO's implicit reward over β)
        rank the chosen response first? ``eval/margin``: chosen minus rejected log-ratio."""
        if self.eval_batch is None:
            return {}
        mask = self.eval_batch.batch.response_mask
        gap = self.actor.forward(self.eval_batch, "logprobs") - self.reference.logprobs(self.eval_batch)
        log_ratio = (gap * mask).sum(-1)  # [2 × pairs]
        margin = log_ratio[0::2] - log_ratio[1::2]  # [pairs]
        ranked = (margin > 0).float() + 0.5 * (margin == 0).float()  # a tie is a coin flip
        return {"eval/preference_accuracy": ranked.mean().item(), "eval/margin": margin.mean().item()}

    def sync(self, actor: LearnerGroup, version: int) -> None:
        return None  # no rollout workers to update


# SFT and distillation (launch/sft_sources.py: they import the helpers above where they use them)
from launch.kd_source import KDSource
from launch.rm_sources import RewardPairSource, StepLabelSource
from launch.sft_sources import SampledSFTSource, SFTSource, TeacherSFTSource

SOURCES: Registry[type] = Registry("source", {"rollout": RolloutSource, "preferences": PreferenceSource,
                                              "sft": SFTSource, "sampled_sft": SampledSFTSource,
                                              "teacher_sft": TeacherSFTSource, "reward_pairs": RewardPairSource,
                                              "step_labels": StepLabelSource, "kd": KDSource})
