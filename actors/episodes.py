"""The episode loop: multi-turn rollouts in which the model calls tools or acts in an environment.

``RolloutWorker.generate`` runs it when the run has an ``env`` section. Each of
the ``n`` samples of a prompt is an episode with its own environment instance
(in the ``EnvWorker`` pool), reset with the prompt's row and seed. Then, turn
after turn:

1. **model turn**: every live episode's whole context (prompt, earlier turns,
   tool answers) goes to the engine in one call; the sampled ids are appended
   as they are, mask 1;
2. **environment turn**: the turn's tool calls (``env.tool_parser``) run in the
   pool, every episode at once; each answer is rendered once, as the chat
   template's delta for the new ``tool`` message(s) (``rlcore.episode.message_delta``),
   and appended as ids, mask 0. A ``gym`` environment instead takes the whole
   turn as its action and answers with a ``user`` message.

An episode ends when the model answers without a tool call, the environment
says it is done, or a budget runs out (``env.max_turns``, ``env.max_total_tokens``,
a turn cut at ``rollout.max_new_tokens``: then it is ``truncated``). Nothing is
ever re-rendered and re-tokenized, so the learner trains on exactly the ids the
engine sampled.

Faults do not stop the run; each is counted. A malformed call, an unknown tool
or wrong arguments: an error the model reads. A tool that raises or hangs: the
same (``EnvWorker``). An env actor that dies: Ray restarts it and its episodes
start again from their prompt.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from actors.env import BAD_ARGS, ERROR, TIMEOUT, UNKNOWN
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.config import EnvConfig
from rlcore.data import PromptRow, row_messages
from rlcore.episode import FAULTS, Trajectory, message_delta
from rlcore.tools import TOOL_PARSERS

REDO_LIMIT = 2
"""How often one episode may start again after its env actor died, before the rollout fails."""


@dataclass
class EnvClient:
    """What a rollout worker needs to run episodes: the env pool's actors, the settings and the tools' schemas."""

    workers: list
    """The ``EnvWorker`` actors (Ray restarts a dead one: the handles stay valid)."""
    cfg: EnvConfig
    schemas: list[dict]
    """The JSON schemas of every tool the model may call: the chat template's ``tools``."""
    ship: bool = False
    """Return each episode's environment instance for rewards that read it (TRL's ``environments``)."""


@dataclass
class Episode:
    """One sample's episode: its prompt row, where its environment lives, and the trajectory so far."""

    row: PromptRow
    group: int
    seed: int
    worker: int
    """Index of its env actor."""
    key: int = 0
    traj: Trajectory | None = None
    prompt_text: str = ""
    last_text: str = ""
    """The last model turn's text: the response rewards judge."""
    stats: Counter = field(default_factory=Counter)
    """Its faults (``FAULTS``)."""
    outcome: dict[str, Any] = field(default_factory=dict)
    """What the env actor returned when it closed (``EnvWorker.close``)."""


class Episodes:
    """Runs episodes on an engine (``vllm.LLM``) with the env pool of ``client``."""

    def __init__(self, llm, tokenizer, rollout_cfg, client: EnvClient):
        self.llm, self.tokenizer, self.rollout, self.client, self.cfg = llm, tokenizer, rollout_cfg, client, client.cfg
        self.parse = TOOL_PARSERS[self.cfg.tool_parser]
        self.env_seconds = 0.0  # this call's time waiting on the env actors

    def run(self, rows: list[PromptRow], n: int, seed: int, greedy: bool) -> list[Episode]:
        """``n`` episodes per row, in row order, all played to their end."""
        workers = len(self.client.workers)
        episodes = [Episode(row, g, seed + g, (g * n + j) % workers) for g, row in enumerate(rows) for j in range(n)]
        self.env_seconds = 0.0
        self._start(episodes)
        while True:
            live = [e for e in episodes if not e.traj.done]
            if live:
                self._model_turn(live, greedy)
                dead = self._env_turn([e for e in live if not e.traj.done])
            else:
                dead = self._close(episodes)
                if not dead:
                    return episodes
            for w in dead:  # every episode whose environment lived there starts again, finished ones too
                self._start(self._restart([e for e in episodes if e.worker == w], w))

    # ---- the two halves of a turn ---------------------------------------------------------------------------------
    def _model_turn(self, live: list[Episode], greedy: bool) -> None:
        """One engine call for every live episode's next turn, each continuing its whole context. Episodes whose
        contexts are equal (a group's first turn) are one request of ``n`` samples: the engine fills their prompt's
        KV cache once."""
        from vllm import SamplingParams

        same: dict[tuple, list[Episode]] = {}
        for e in live:
            same.setdefault((tuple(e.traj.context()), e.traj.remaining()), []).append(e)
        params = [SamplingParams(n=len(es), temperature=0.0 if greedy else self.rollout.temperature,
                                 top_p=1.0 if greedy else self.rollout.top_p, logprobs=0,
                                 max_tokens=min(self.rollout.max_new_tokens, remaining))
                  for (_, remaining), es in same.items()]
        outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids, _ in same], params, use_tqdm=False)
        for es, out in zip(same.values(), outputs):
            for e, sample in zip(es, out.outputs):
                ids = list(sample.token_ids)
                e.traj.add_model_turn(ids, [lp[t].logprob for lp, t in zip(sample.logprobs, ids)], sample.text)
                e.last_text = sample.text
                if sample.finish_reason == "length":  # cut inside the turn: nothing can follow it
                    e.traj.truncated = e.traj.done = True

    def _env_turn(self, live: list[Episode]) -> list[int]:
        """Send the turn's calls (or ``gym`` actions) to the pool and append the answers; returns the env actors that
        died meanwhile (Ray restarts them)."""
        gym = self.cfg.contract == "gym"
        asks: dict[int, list[tuple[Episode, Any]]] = {}
        for e in live:
            parsed = None if gym else self.parse(e.last_text)
            if parsed is not None and not parsed.calls and not parsed.malformed:
                e.traj.done = True  # an answer: the episode's end
            elif e.traj.turns >= self.cfg.max_turns or e.traj.remaining() == 0:
                e.traj.truncated = e.traj.done = True  # it would go on, but its budget is spent
            else:
                e.stats["malformed_calls"] += len(parsed.malformed) if parsed else 0
                asks.setdefault(e.worker, []).append((e, parsed))
        start = time.perf_counter()
        futures = {w: self._ask(w, [(e.key, e.last_text if gym else p.calls) for e, p in items])
                   for w, items in asks.items()}
        answers, dead = gather(futures)
        for w in answers:
            for (e, parsed), answer in zip(asks[w], answers[w]):
                if gym:
                    self._append(e, [{"role": "user", "content": answer.observation}])
                    e.traj.done = e.traj.done or answer.done
                else:
                    self._append(e, self._tool_messages(e, parsed, answer))
        self.env_seconds += time.perf_counter() - start
        return dead

    def _ask(self, worker: int, requests: list):
        actor = self.client.workers[worker]
        return (actor.step if self.cfg.contract == "gym" else actor.call).remote(requests)

    def _tool_messages(self, e: Episode, parsed, results) -> list[dict]:
        """The ``tool`` messages answering one turn: each call's result (cut to ``env.max_tool_tokens``), then an
        error for each malformed call."""
        messages = []
        for result in results:
            e.stats["tool_errors"] += result.status in (ERROR, UNKNOWN, BAD_ARGS)
            e.stats["tool_timeouts"] += result.status == TIMEOUT
            messages.append({"role": "tool", "name": result.name, "content": self._cut(e, result.content)})
        for reason in parsed.malformed:
            messages.append({"role": "tool", "name": "", "content": str({"error": f"malformed tool call: {reason}"})})
        return messages

    def _cut(self, e: Episode, content: str) -> str:
        ids = self.tokenizer.encode(content, add_special_tokens=False)
        if len(ids) <= self.cfg.max_tool_tokens:
            return content
        e.stats["tool_answers_cut"] += 1
        return self.tokenizer.decode(ids[: self.cfg.max_tool_tokens])

    def _append(self, e: Episode, messages: list[dict]) -> None:
        e.traj.add_env(message_delta(self.tokenizer, messages, self.client.schemas or None), messages)

    # ---- starting, restarting and closing episodes -----------------------------------------------------------------
    def _start(self, episodes: list[Episode]) -> None:
        """Open each episode's environment (a fresh key) and build its trajectory from the prompt, the first
        observation appended to the prompt's last message (TRL's rule)."""
        for e in episodes:
            e.key = uuid.uuid4().int >> 65
        groups = by_worker(episodes)

        def open_(w: int):
            es = groups[w]
            return self.client.workers[w].open.remote([e.key for e in es], [env_row(e.row) for e in es],
                                                      [e.seed for e in es])

        pending = {w: open_(w) for w in groups}
        for w, es in groups.items():
            for _ in range(REDO_LIMIT + 1):
                try:
                    observations = ray.get(pending[w])
                    break
                except ray.exceptions.RayActorError:  # restarting: ask again
                    pending[w] = open_(w)
            else:
                raise RuntimeError(f"env worker {w} died {REDO_LIMIT + 1} times while starting episodes")
            for e, observation in zip(es, observations):
                e.prompt_text = self._prompt(e.row, observation)
                e.traj = Trajectory(prompt_ids=self.tokenizer.encode(e.prompt_text, add_special_tokens=False),
                                    max_total_tokens=self.cfg.max_total_tokens)

    def _prompt(self, row: PromptRow, observation: str | None) -> str:
        if observation is None:
            return row.prompt
        messages = copy.deepcopy(row.messages) if row.messages else [{"role": "user", "content": row.prompt}]
        messages[-1]["content"] += observation
        return self.tokenizer.apply_chat_template(messages, tools=self.client.schemas or None, tokenize=False,
                                                  add_generation_prompt=True)

    def _restart(self, episodes: list[Episode], worker: int) -> list[Episode]:
        """``episodes`` (those of the env actor ``worker``, which died), counted and to start again; a RuntimeError
        when one has started again too often."""
        print(f"env worker {worker} died; its {len(episodes)} episodes start again", flush=True)
        for e in episodes:
            e.stats["redone"] += 1
            if e.stats["redone"] > REDO_LIMIT:
                raise RuntimeError(f"env worker {worker} died {e.stats['redone']} times during one episode; giving up")
        return episodes

    def _close(self, episodes: list[Episode]) -> list[int]:
        """End every episode in its env actor, keeping what it returns (``Episode.outcome``); returns the env actors
        that died before they could."""
        groups = by_worker(episodes)
        futures = {w: self.client.workers[w].close.remote([e.key for e in es], self.client.ship)
                   for w, es in groups.items()}
        outcomes, dead = gather(futures)
        for w in outcomes:
            for e, outcome in zip(groups[w], outcomes[w]):
                e.outcome = outcome
        return dead


def gather(futures: dict[int, ray.ObjectRef]) -> tuple[dict[int, Any], list[int]]:
    """What each env actor answered, and the env actors that died before they could (Ray restarts them)."""
    answers, dead = {}, []
    for w, future in futures.items():
        try:
            answers[w] = ray.get(future)
        except ray.exceptions.RayActorError:
            dead.append(w)
    return answers, dead


def by_worker(episodes: list[Episode]) -> dict[int, list[Episode]]:
    """The episodes grouped by their env actor, in order."""
    groups: dict[int, list[Episode]] = {}
    for e in episodes:
        groups.setdefault(e.worker, []).append(e)
    return groups


def env_row(row: PromptRow) -> dict:
    """The data row's fields as an environment's ``reset`` receives them: its extra columns, the prompt, the answer."""
    return {**row.metadata, "prompt": row.messages if row.messages is not None else row.prompt, "answer": row.answer}


def episode_batch(episodes: list[Episode], version: int, env_seconds: float, thinking) -> RolloutBatch:
    """The episodes as a ``RolloutBatch``: the response is everything after the prompt, masked to the model's
    tokens; ``responses`` hold each episode's last model turn (what rewards judge) and ``messages`` the whole
    conversation. ``thinking(text)`` counts a response's thinking tokens."""
    width = max((len(e.traj.ids) for e in episodes), default=0)
    stats = {"turns": [e.traj.turns for e in episodes], "tool_calls": [e.traj.tool_calls for e in episodes],
             "model_tokens": [e.traj.model_tokens for e in episodes], "env_tokens": [e.traj.env_tokens for e in episodes],
             **{k: [e.stats[k] for e in episodes] for k in FAULTS},
             "env_seconds": [env_seconds / max(len(episodes), 1)] * len(episodes)}
    returns = [e.outcome.get("return") for e in episodes]
    shipped = [e.outcome["environment"] for e in episodes] if episodes and "environment" in episodes[0].outcome else None
    return RolloutBatch(
        prompt_ids=[e.traj.prompt_ids for e in episodes],
        response_ids=[e.traj.ids for e in episodes],
        response_mask=pad_2d([e.traj.mask for e in episodes], width=width),
        group_ids=torch.tensor([e.group for e in episodes], dtype=torch.long),
        prompt_index=torch.tensor([e.row.index for e in episodes], dtype=torch.long),
        rollout_logprobs=pad_2d([e.traj.logprobs for e in episodes], width=width),
        policy_version=torch.full((len(episodes),), version, dtype=torch.long),
        prompts=[e.prompt_text for e in episodes],
        user_prompts=[e.row.user_text() for e in episodes],
        responses=[e.last_text for e in episodes],
        answers=[e.row.answer for e in episodes],
        truncated=torch.tensor([e.traj.truncated for e in episodes], dtype=torch.bool),
        metadata=[e.row.metadata for e in episodes],
        thinking_tokens=torch.tensor([thinking(e.last_text) for e in episodes], dtype=torch.long),
        prompt_messages=row_messages([e.row for e in episodes]),
        messages=[e.traj.messages for e in episodes],
        episode_stats={k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()},
        env_returns=torch.tensor([float("nan") if r is None else r for r in returns], dtype=torch.float32),
        environments=shipped,
    )
