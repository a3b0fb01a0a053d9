"""Ray actor groups: each wraps one role class and spreads work over its actors.

The driver talks to these groups only; each method sends work to every actor
of the group at once and waits for all of them. Constructing a group starts
its actors without waiting: ``ready`` holds what to wait on, so that every
role of a run starts at the same time (``wait_ready``). Roles that read a step's batch
(the reference, the learner groups) get it through a ``Shipment``: each field
they need is put in Ray's object store once per step and slice, and never the
texts, which only the reward workers read.
"""

from __future__ import annotations

import threading
import time

import ray
import torch

from actors.learner import LearnerRank
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import Completion, Request, RolloutWorker
from algorithms.base import LearnerSpec
from rewards.api import RewardSample, RewardTerm, term_value
from rlcore.batch import TOKEN_FIELDS, TRAIN_FIELDS, RolloutBatch, equal_parts, take
from rlcore.config import Config
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


class Shipment:
    """One step's batch in the object store: each field of each slice is put once, however many calls read it.

    A field that the driver replaces (``batch.advantages = ...``) is put again on
    its next use; fields nobody asks for never leave the driver.
    """

    def __init__(self, batch: RolloutBatch):
        self.batch = batch
        self._puts: dict[tuple[str, int], tuple[object, list[ray.ObjectRef]]] = {}

    def slices(self, fields: tuple[str, ...], count: int) -> tuple[list[str], list[list[ray.ObjectRef]]]:
        """The set fields among ``fields``, and for each of ``count`` equal slices the refs of their values."""
        names = [f for f in fields if getattr(self.batch, f) is not None]
        parts = equal_parts(len(self.batch), count)
        refs: list[list[ray.ObjectRef]] = [[] for _ in parts]
        for name in names:
            value = getattr(self.batch, name)
            held = self._puts.get((name, count))
            if held is None or held[0] is not value:
                held = (value, [ray.put(take(value, torch.as_tensor(p), list(p))) for p in parts])
                self._puts[(name, count)] = held
            for part_refs, ref in zip(refs, held[1]):
                part_refs.append(ref)
        return names, refs


def remote(cls: type, **resources):
    """``cls`` as a Ray actor class that also takes a batch as field ObjectRefs: ``run(method, names, *refs)``.

    Ray resolves the refs (top-level arguments) before the call, so the role
    itself stays a plain class that receives a ``RolloutBatch``.
    """

    class Role(cls):
        def run(self, method: str, names: list[str], *values, **kwargs):
            return getattr(self, method)(RolloutBatch(**dict(zip(names, values))), **kwargs)

    Role.__name__ = Role.__qualname__ = cls.__name__
    return ray.remote(**resources)(Role)


def wait_ready(groups: list) -> None:
    """Wait until every actor of ``groups`` has started (and, for a learner group, formed its process group)."""
    ray.get([ref for group in groups for ref in group.ready])


def _run_sliced(actors: list, shipment: Shipment, fields: tuple[str, ...], method: str, **kwargs) -> list:
    names, refs = shipment.slices(fields, len(actors))
    return ray.get([actor.run.remote(method, names, *part, **kwargs) for actor, part in zip(actors, refs)])


class RolloutGroup:
    """``rollout.num_workers`` vLLM actors; prompts are spread evenly over them.

    A worker that dies (its process killed, its node lost) is replaced: the new
    engine loads the newest weights pushed to the group, with their version,
    before it gets any prompt, and the dead worker's share of the call is
    generated again on it with the same seed. ``faults`` counts the
    replacements (``restarts``) and the prompts or requests generated again
    (``regenerated``); a share whose replacement dies too fails the call.
    """

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.rollout
        self.model_path, self.settings, self.seed = model_path, rc, cfg.trainer.seed
        self.actor = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, max_restarts=0)(RolloutWorker)
        self.workers = [self._start(i) for i in range(rc.num_workers)]
        self.ready = [w.get_version.remote() for w in self.workers]  # every engine up
        self.weights: tuple[ray.ObjectRef, int] | None = None  # the newest weights pushed, for a replacement
        self.faults = {"restarts": 0, "regenerated": 0}

    def _start(self, index: int):
        return self.actor.remote(self.model_path, self.settings, seed=self.seed + index)

    def _replace(self, index: int) -> None:
        """A new worker in place of worker ``index``, with the newest weights and version before any traffic."""
        ray.kill(self.workers[index], no_restart=True)
        worker = self._start(index)
        ray.get(worker.update_weights.remote(*self.weights) if self.weights else worker.get_version.remote())
        self.workers[index] = worker
        self.faults["restarts"] += 1

    def _spread(self, method: str, items: list, seed: int | None, *args, **kwargs) -> list:
        """``method(items[a:b], *args, seed=seed + a, **kwargs)`` on each worker's contiguous share; the results in
        order. A share whose worker died is run again once on its replacement."""
        shares = [(i, a, b) for i, (a, b) in enumerate(_split(items, len(self.workers))) if b > a]

        def call(i, a, b):
            return getattr(self.workers[i], method).remote(items[a:b], *args, seed=None if seed is None else seed + a,
                                                           **kwargs)

        futures = [call(*share) for share in shares]
        results = []
        for (i, a, b), future in zip(shares, futures):
            try:
                results.append(ray.get(future))
            except ray.exceptions.RayActorError:
                print(f"rollout worker {i} died; replacing it and generating its {b - a} items again", flush=True)
                self._replace(i)
                self.faults["regenerated"] += b - a
                results.append(ray.get(call(i, a, b)))
        return results

    def generate(self, prompts: list[PromptRow], n: int, seed: int | None = None, greedy: bool = False) -> RolloutBatch:
        """``n`` samples per prompt, in prompt order; the worker taking prompts ``a:b`` samples with seed ``seed + a``."""
        return RolloutBatch.concat(self._spread("generate", prompts, seed, n, greedy=greedy))

    def complete(self, requests: list[Request], seed: int | None = None) -> list[list[Completion]]:
        """Each request's completions (``RolloutWorker.complete``), in request order; the worker taking
        requests ``a:b`` samples with seed ``seed + a``."""
        return [completions for part in self._spread("complete", requests, seed) for completions in part]

    def update_weights(self, state_dict_ref: ray.ObjectRef, version: int) -> None:
        # The ObjectRef goes to every worker; Ray moves the tensors once per node, not via the driver.
        self.weights = (state_dict_ref, version)
        futures = [w.update_weights.remote(state_dict_ref, version) for w in self.workers]
        for i, future in enumerate(futures):
            try:
                ray.get(future)
            except ray.exceptions.RayActorError:
                print(f"rollout worker {i} died; replacing it", flush=True)
                self._replace(i)


class RewardPool:
    """The actors of one reward term. Spreads samples over them and contains the term's faults:

    * a batch past ``timeout_s``: its actor is killed and replaced, its samples get ``failure_score``;
    * a dead actor: replaced, and its batch retried once on the replacement;
    * samples the reward raised on (reported by the worker): ``failure_score``.
    """

    def __init__(self, term: RewardTerm):
        self.term, self.settings = term, term.config
        self.actor = ray.remote(num_cpus=self.settings.num_cpus, num_gpus=self.settings.num_gpus,
                                max_restarts=0)(RewardWorker)
        self.workers = [self._start() for _ in range(self.settings.num_workers)]

    def _start(self):
        return self.actor.remote(self.term.name, self.term.target, dict(self.term.args))

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
                ready, _ = ray.wait([future], timeout=self.settings.timeout_s)
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

    def __init__(self, terms: list[RewardTerm]):
        self.pools = [RewardPool(term) for term in terms]
        self.lock = threading.Lock()  # a pipelined run scores from the collect thread and evaluates from the main one
        self.ready = [w.ready.remote() for pool in self.pools for w in pool.workers]  # fails early on a bad reward

    def score(self, batch: RolloutBatch) -> dict[str, float]:
        """Fill ``batch.scores`` (weighted sum) and ``batch.reward_terms``; returns fault metrics.

        A failed sample gets its term's ``failure_score``. The first traceback of
        each failing term is printed once per call.
        """
        with self.lock:
            return self._score(batch)

    def _score(self, batch: RolloutBatch) -> dict[str, float]:
        thinking = batch.thinking_tokens.tolist() if batch.thinking_tokens is not None else [-1] * len(batch)
        samples = [RewardSample(p, r, ids, a, m, None if t < 0 else t) for p, r, ids, a, m, t in
                   zip(batch.prompts, batch.responses, batch.response_ids, batch.answers, batch.metadata, thinking)]
        pending = [pool.submit(samples) for pool in self.pools]  # every term at once
        total = torch.zeros(len(samples))
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for pool, futures in zip(self.pools, pending):
            name, failure = pool.term.name, pool.settings.failure_score
            rows, faults, trace = pool.collect(samples, futures)
            value = torch.tensor([term_value(row) if row else failure for row in rows])
            terms[name] = value
            for key in sorted({k for row in rows if row for k in row} - {""}):  # named parts ("_x" logged as "x")
                terms[f"{name}/{key.lstrip('_')}"] = torch.tensor([row.get(key, 0.0) if row else failure for row in rows])
            total += pool.settings.weight * value
            metrics.update({f"reward_faults/{name}/{k}": float(v) for k, v in faults.items()})
            if trace:
                print(f"reward '{name}': {faults['errors']} of {len(samples)} samples failed; "
                      f"first traceback:\n{trace}", flush=True)
        batch.scores, batch.reward_terms = total, terms
        return metrics


class ReferenceGroup:
    """One reference actor (the frozen initial policy). If it dies it is replaced (its weights are the frozen ones
    on disk) and the step's log-probs computed again; ``faults["restarts"]`` counts this."""

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.reference
        self.cfg, self.model_path = cfg, model_path
        self.actor = remote(ReferenceWorker, num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, max_restarts=0)
        self.worker = self.actor.remote(cfg, model_path)
        self.ready = [self.worker.__ray_ready__.remote()]
        self.faults = {"restarts": 0}

    def logprobs(self, shipment: Shipment) -> torch.Tensor:
        try:
            return _run_sliced([self.worker], shipment, TOKEN_FIELDS, "logprobs")[0]
        except ray.exceptions.RayActorError:
            print("reference worker died; replacing it and computing the step's log-probs again", flush=True)
            ray.kill(self.worker, no_restart=True)
            self.worker = self.actor.remote(self.cfg, self.model_path)
            self.faults["restarts"] += 1
            return _run_sliced([self.worker], shipment, TOKEN_FIELDS, "logprobs")[0]


class LearnerGroup:
    """``world_size`` ranks of one learner group (``LearnerRank``) forming one torch.distributed group."""

    def __init__(self, cfg: Config, algorithm, name: str, spec: LearnerSpec, model_cls: type):
        self.name, self.spec = name, spec
        s = spec.settings
        actor = remote(LearnerRank, num_cpus=s.num_cpus, num_gpus=s.num_gpus)
        self.ranks = [actor.remote(cfg, algorithm, name, spec, model_cls, rank, s.world_size)
                      for rank in range(s.world_size)]
        address = self.ranks[0].address.remote()  # rank 0 hosts the group; Ray passes the result on
        self.ready = [r.setup.remote(address) for r in self.ranks]

    def forward(self, shipment: Shipment, output: str) -> torch.Tensor:
        """[B, T] model output ``output`` under the current weights, each rank on an equal slice."""
        return torch.cat(_run_sliced(self.ranks, shipment, TOKEN_FIELDS, "forward", output=output))

    def train_step(self, shipment: Shipment, step: int, state: dict) -> dict[str, float]:
        """One update on the batch; the ranks' metrics (averaged, ``*_max`` the largest) as ``<group>/<metric>``,
        with the group's throughput."""
        start = time.perf_counter()
        results = _run_sliced(self.ranks, shipment, TRAIN_FIELDS, "train_step", step=step, state=state)
        tokens = shipment.batch.num_response_tokens * self.spec.settings.epochs
        metrics = {f"{self.name}/{k}": max(m[k] for m in results) if k.endswith("_max") else
                   sum(m[k] for m in results) / len(results) for k in results[0]}
        metrics[f"throughput/{self.name}_tokens_per_s"] = tokens / max(time.perf_counter() - start, 1e-9)
        return metrics

    def state_dict_ref(self) -> ray.ObjectRef:
        """An ObjectRef to the gathered full weights (every rank takes part; rank 0 returns them)."""
        refs = [r.full_state_dict.remote() for r in self.ranks]
        ray.get(refs[1:])  # surfaces any rank's error here
        ray.wait(refs[:1])
        return refs[0]

    def export(self, path: str) -> None:
        ray.get([r.export.remote(path) for r in self.ranks])

    def save_checkpoint(self, path: str) -> None:
        ray.get([r.save_checkpoint.remote(path) for r in self.ranks])

    def load_checkpoint(self, path: str) -> None:
        ray.get([r.load_checkpoint.remote(path) for r in self.ranks])

    def shutdown(self) -> None:
        ray.get([r.shutdown.remote() for r in self.ranks])
