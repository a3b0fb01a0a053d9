"""Ray actor groups: each wraps one role class and spreads work over its actors.

The driver talks to these groups only; each method sends work to every actor
of the group at once and waits for all of them.
"""

from __future__ import annotations

import ray
import torch

from actors.critic import Critic
from actors.learner import Learner
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from rlcore.batch import RolloutBatch
from rewards.api import RewardSample, term_value
from rlcore.config import Config, LearnerConfig, RewardTermConfig
from rlcore.data import PromptRow


def _split(items: list, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of ``parts`` contiguous slices as even as possible (some may be empty)."""
    base, extra = divmod(len(items), parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class RolloutGroup:
    """``rollout.num_workers`` vLLM actors; prompts are spread evenly over them."""

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.rollout
        actor = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus)(RolloutWorker)
        self.workers = [actor.remote(model_path, rc, seed=cfg.trainer.seed + i) for i in range(rc.num_workers)]
        ray.get([w.get_version.remote() for w in self.workers])  # wait until every engine is up

    def generate(self, prompts: list[PromptRow], group_ids: list[int], n: int, greedy: bool = False) -> RolloutBatch:
        futures = [w.generate.remote(prompts[a:b], group_ids[a:b], n, greedy)
                   for w, (a, b) in zip(self.workers, _split(prompts, len(self.workers))) if b > a]
        return RolloutBatch.concat(ray.get(futures))

    def update_weights(self, state_dict_ref: ray.ObjectRef, version: int) -> None:
        # The ObjectRef goes to every worker; Ray moves the tensors once per node, not via the driver.
        ray.get([w.update_weights.remote(state_dict_ref, version) for w in self.workers])


class RewardPool:
    """The actors of one reward term. Spreads samples over them and contains the term's faults:

    * a batch past ``timeout_s``: its actor is killed and replaced, its samples get ``failure_score``;
    * a dead actor: replaced, and its batch retried once on the replacement;
    * samples the reward raised on (reported by the worker): ``failure_score``.
    """

    def __init__(self, term: RewardTermConfig):
        self.term = term
        self.actor = ray.remote(num_cpus=term.num_cpus, num_gpus=term.num_gpus, max_restarts=0)(RewardWorker)
        self.workers = [self._start() for _ in range(term.num_workers)]

    def _start(self):
        return self.actor.remote(self.term.name, dict(self.term.args))

    def _replace(self, index: int) -> None:
        ray.kill(self.workers[index], no_restart=True)
        self.workers[index] = self._start()

    def submit(self, samples: list) -> list[tuple[int, int, int, ray.ObjectRef]]:
        """Send each actor its share; returns (actor index, start, stop, future) per share."""
        return [(w, a, b, self.workers[w].score.remote(samples[a:b]))
                for w, (a, b) in enumerate(_split(samples, len(self.workers))) if b > a]

    def collect(self, samples: list, pending: list) -> tuple[list[dict[str, float] | None], dict[str, float], str | None]:
        """Wait for the shares (each within ``timeout_s``); returns rows (None = failed), fault counts, a traceback."""
        rows: list[dict[str, float] | None] = [None] * len(samples)
        faults = {"errors": 0, "timeouts": 0, "restarts": 0}
        first_trace = None
        for w, a, b, future in pending:
            for attempt in (0, 1):
                ready, _ = ray.wait([future], timeout=self.term.timeout_s)
                if not ready:
                    self._replace(w)
                    faults["timeouts"] += b - a
                    faults["restarts"] += 1
                    break
                try:
                    share, errors, trace = ray.get(future)
                except ray.exceptions.RayActorError:
                    self._replace(w)
                    faults["restarts"] += 1
                    if attempt == 0:  # retry the batch once on the new actor
                        future = self.workers[w].score.remote(samples[a:b])
                        continue
                    faults["errors"] += b - a
                    first_trace = first_trace or f"the actor died twice scoring samples {a}..{b - 1}"
                    break
                rows[a:b] = share
                faults["errors"] += errors
                first_trace = first_trace or trace
                break
        return rows, faults, first_trace


class RewardGroup:
    """One ``RewardPool`` per reward term; all terms score a batch at the same time."""

    def __init__(self, cfg: Config):
        self.terms = list(cfg.reward.terms)
        self.pools = [RewardPool(term) for term in self.terms]
        ray.get([w.ready.remote() for pool in self.pools for w in pool.workers])  # fail early on a bad reward

    def score(self, batch: RolloutBatch) -> dict[str, float]:
        """Fill ``batch.scores`` (weighted sum) and ``batch.reward_terms``; returns fault metrics.

        A failed sample gets its term's ``failure_score``. The first traceback of
        each failing term is printed once per call.
        """
        samples = [RewardSample(p, r, ids, a, m) for p, r, ids, a, m in
                   zip(batch.prompts, batch.responses, batch.response_ids, batch.answers, batch.metadata)]
        pending = [pool.submit(samples) for pool in self.pools]  # every term at once
        total = torch.zeros(len(samples))
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for term, pool, futures in zip(self.terms, self.pools, pending):
            rows, faults, trace = pool.collect(samples, futures)
            keys = sorted({k for row in rows if row for k in row})
            value = torch.tensor([term_value(row) if row else term.failure_score for row in rows])
            terms[term.name] = value
            for key in (k for k in keys if k):  # a dict reward's named parts ("_x" is logged as "x")
                terms[f"{term.name}/{key.lstrip('_')}"] = torch.tensor(
                    [row.get(key, 0.0) if row else term.failure_score for row in rows])
            total += term.weight * value
            metrics.update({f"reward_faults/{term.name}/{k}": float(v) for k, v in faults.items()})
            if trace:
                print(f"reward '{term.name}': {faults['errors']} of {len(samples)} samples failed; "
                      f"first traceback:\n{trace}", flush=True)
        batch.scores, batch.reward_terms = total, terms
        return metrics


class ReferenceGroup:
    """One reference actor (the frozen initial policy)."""

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.reference
        actor = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus)(ReferenceWorker)
        self.worker = actor.remote(model_path, cfg.model.dtype, cfg.rollout.temperature, rc.micro_batch_size)

    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        return ray.get(self.worker.logprobs.remote(batch))


class FSDPGroup:
    """``world_size`` ranks of one FSDP role forming one torch.distributed group."""

    def __init__(self, worker_cls: type, cfg: Config, model_path: str, group_cfg: LearnerConfig):
        actor = ray.remote(num_cpus=group_cfg.num_cpus, num_gpus=group_cfg.num_gpus)(worker_cls)
        self.ranks = [actor.remote(cfg, model_path, rank, group_cfg.world_size) for rank in range(group_cfg.world_size)]
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """Each rank trains on an equal slice; metrics are averaged over ranks (tokens summed)."""
        results = ray.get([r.train_step.remote(part) for r, part in zip(self.ranks, batch.chunks(len(self.ranks)))])
        out = {k: sum(m[k] for m in results) / len(results) for k in results[0]}
        out["learner_tokens"] = sum(m["learner_tokens"] for m in results)
        return out

    def _per_rank(self, method: str, batch: RolloutBatch) -> torch.Tensor:
        """Run a per-token query on equal slices over all ranks (FSDP forwards are collective)."""
        parts = batch.chunks(len(self.ranks))
        return torch.cat(ray.get([getattr(r, method).remote(p) for r, p in zip(self.ranks, parts)]))

    def save_checkpoint(self, path: str) -> None:
        ray.get([r.save_checkpoint.remote(path) for r in self.ranks])

    def load_checkpoint(self, path: str) -> None:
        ray.get([r.load_checkpoint.remote(path) for r in self.ranks])

    def shutdown(self) -> None:
        ray.get([r.shutdown.remote() for r in self.ranks])


class LearnerGroup(FSDPGroup):
    """The policy: ``learner.world_size`` learner ranks."""

    def __init__(self, cfg: Config, model_path: str):
        super().__init__(Learner, cfg, model_path, cfg.learner)

    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        return self._per_rank("logprobs", batch)

    def state_dict_ref(self) -> ray.ObjectRef:
        """An ObjectRef to the gathered full weights (every rank takes part; rank 0 returns them)."""
        refs = [r.full_state_dict.remote() for r in self.ranks]
        ray.get(refs[1:])  # surfaces any rank's error here
        ray.wait(refs[:1])
        return refs[0]

    def export(self, path: str) -> None:
        ray.get([r.export.remote(path) for r in self.ranks])


class CriticGroup(FSDPGroup):
    """The PPO value model: ``critic.world_size`` critic ranks."""

    def __init__(self, cfg: Config, model_path: str):
        super().__init__(Critic, cfg, model_path, cfg.critic)

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        return self._per_rank("values", batch)
