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

import dataclasses
import math
import threading
import time
import weakref

import ray
import torch

from actors.env import EnvWorker
from actors.episodes import EnvClient
from actors.learner import LearnerRank
from actors.placement import SEPARATE, Colocated, Separate
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import Completion, Request, RolloutWorker
from actors.teacher import TeacherWorker
from algorithms.base import LearnerSpec
from rewards.api import RewardFailure, RewardSample, RewardStartError, RewardTerm, term_value
from rlcore.batch import TOKEN_FIELDS, TRAIN_FIELDS, RolloutBatch, rank_parts, sequence_lengths, take
from rlcore.config import Config, EnvConfig, ReferenceConfig
from rlcore.data import PromptRow


def _split(count: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of ``parts`` contiguous slices of ``count`` items, as even as possible (some may be empty)."""
    return weighted_split(count, [None] * parts)


class Shipment:
    """One step's batch in the object store: each field of each slice is put once, however many calls read it.

    The ``count`` slices (one per actor) are ``rank_parts``: whole groups, equal sample counts, about equal
    tokens. A field that the driver replaces (``batch.advantages = ...``) is put again on its next use; fields
    nobody asks for never leave the driver.
    """

    def __init__(self, batch: RolloutBatch):
        self.batch = batch
        self._puts: dict[tuple[str, int], tuple[object, list[ray.ObjectRef]]] = {}
        self._parts: dict[int, list[list[int]]] = {}

    def parts(self, count: int) -> list[list[int]]:
        """The sample indices of each of ``count`` slices."""
        if count not in self._parts:
            b = self.batch
            self._parts[count] = rank_parts(sequence_lengths(b), b.group_ids.tolist(), count)
        return self._parts[count]

    def slices(self, fields: tuple[str, ...], count: int) -> tuple[list[str], list[list[ray.ObjectRef]]]:
        """The set fields among ``fields``, and for each of ``count`` slices the refs of their values."""
        names = [f for f in fields if getattr(self.batch, f) is not None]
        parts = self.parts(count)
        refs: list[list[ray.ObjectRef]] = [[] for _ in parts]
        for name in names:
            value = getattr(self.batch, name)
            held = self._puts.get((name, count))
            if held is None or held[0] is not value:
                held = (value, [ray.put(take(value, torch.as_tensor(p, dtype=torch.long), p)) for p in parts])
                self._puts[(name, count)] = held
            for part_refs, ref in zip(refs, held[1]):
                part_refs.append(ref)
        return names, refs

    def joined(self, results: list[torch.Tensor]) -> torch.Tensor:
        """The slices' per-sample results (``[b, ...]`` each, in slice order) as one tensor in the batch's order."""
        order = torch.tensor([i for part in self.parts(len(results)) for i in part], dtype=torch.long)
        return torch.cat(results)[order.argsort()]  # row k of the slices is sample order[k]


def per_node(count: int) -> int:
    """How many of ``count`` actors share a node when they spread over the cluster's live nodes (at least 1)."""
    return math.ceil(count / max(1, sum(node["Alive"] for node in ray.nodes())))


def remote(cls: type, settings, max_restarts: int = 0):
    """``cls`` as a Ray actor class placed by a role's ``settings`` (``num_cpus``, ``num_gpus``, ``resources``,
    ``label_selector``), by default never restarted by Ray (the groups replace their dead actors themselves), that
    also takes a batch as field ObjectRefs: ``run(method, names, *refs)``.

    Ray resolves the refs (top-level arguments) before the call, so the role
    itself stays a plain class that receives a ``RolloutBatch``.
    """

    class Role(cls):
        def run(self, method: str, names: list[str], *values, **kwargs):
            from rlcore.batch import RolloutBatch  # here, not a global: a role that takes no batch never imports torch

            return getattr(self, method)(RolloutBatch(**dict(zip(names, values))), **kwargs)

    Role.__name__ = Role.__qualname__ = cls.__name__
    return ray.remote(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus, resources=dict(settings.resources),
                      label_selector=dict(settings.label_selector) or None, max_restarts=max_restarts)(Role)


_HOLDERS: weakref.WeakSet = weakref.WeakSet()
"""This driver's groups whose actors hold a model (vLLM engines, learner ranks, the reference, teachers)."""


def end_models() -> None:
    """Kill every live actor of this driver that holds a model, at once (``ray.kill``): a command calls it when it
    has succeeded and written everything. Let go otherwise (their handles dropped, or the job over), each would tear
    its interpreter down first (vLLM's engine shut down, every module freed): 2.5 s of CPU for a vLLM engine and
    1 s for a learner rank on 2 cores, that the next run on the cluster waited for (BENCHMARKS.md). The actors that
    run a user's code (reward workers, environments) end as before, their ``atexit`` handlers run."""
    actors = [actor for group in list(_HOLDERS) for actor in group.actors()]
    for actor in actors:
        ray.kill(actor, no_restart=True)
    # ray.kill sends the request and returns: wait until each one is dead, or the job's end, which follows, could
    # win the race and end it the slow way
    deadline = time.monotonic() + 10
    for actor in actors:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=max(0.0, deadline - time.monotonic()))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break
            time.sleep(0.01)


def wait_ready(groups: list) -> None:
    """Wait until every actor of ``groups`` has started (and, for a learner group, formed its process group).

    A reward whose constructor raised stops the wait with its one line, ``RewardStartError`` (``RewardWorker.ready``),
    not Ray's traceback around it."""
    try:
        ray.get([ref for group in groups for ref in group.ready])
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, RewardStartError):
            raise RewardStartError(str(exc.cause)) from None
        raise


def _sliced(actors: list, shipment: Shipment, fields: tuple[str, ...], method: str, **kwargs) -> list[ray.ObjectRef]:
    """``method`` on each actor's slice of the batch (``Shipment.parts``); the futures, in actor order."""
    names, refs = shipment.slices(fields, len(actors))
    return [actor.run.remote(method, names, *part, **kwargs) for actor, part in zip(actors, refs)]


START_TIMEOUT_S = 900.0
"""How long ``RolloutGroup.resize`` waits for new vLLM engines to start and load the weights."""


class RolloutGroup:
    """``rollout.num_workers`` vLLM actors; each call's prompts are split over them by their measured speed.

    * **Split.** With ``rollout.balance=speed`` each worker's share of a call is
      proportional to the items per second it managed in its recent calls, so a
      slow node does not hold the step up; ``even`` gives equal shares.
    * **Faults.** A worker that dies (its process killed, its node lost) is
      replaced. The dead worker's share of the call is generated again at once,
      with the same seed, by the fastest worker left, while the replacement's
      engine starts; the replacement loads the newest weights pushed to the group,
      with their version, and joins the pool for the calls after it is up (with a
      single worker the call waits for it). When the cluster no longer has the
      custom resources or GPUs for a replacement (its node left), the pool shrinks
      instead. ``faults`` counts replacements (``restarts``), items generated
      again (``regenerated``) and workers given up (``lost``).
    * **Size.** ``resize(n)`` adds workers (each with the newest weights before
      any traffic) or lets the last ones go once their calls in flight are done.
      A call uses the pool as it was when the call began. ``size`` counts the
      replacements still starting.
    """

    def __init__(self, cfg: Config, model_path: str, place: Separate | Colocated = SEPARATE,
                 env: EnvClient | None = None):
        rc = cfg.rollout
        self.model_path, self.settings, self.seed = model_path, rc, cfg.trainer.seed
        self.place, self.env = place, env
        self.actor = remote(RolloutWorker, rc)
        self.workers = [self._start(i) for i in range(rc.num_workers)]
        self.ready = [w.get_version.remote() for w in self.workers]  # every engine up
        self.weights: tuple[ray.ObjectRef, int] | None = None  # the newest weights pushed, for a replacement
        self.joining: dict = {}  # replacement -> (its newest weight push, tries left); in the pool once that is done
        self.speed: dict = {}  # worker -> items per second, a running mean over its calls
        self.faults = {"restarts": 0, "regenerated": 0, "lost": 0}
        self.lock = threading.RLock()  # the pool changes from the driver's thread while the collect thread samples
        _HOLDERS.add(self)

    @property
    def size(self) -> int:
        """Workers in the pool, and replacements starting."""
        with self.lock:
            return len(self.workers) + len(self.joining)

    def _start(self, index: int):
        return self.actor.options(**self.place.options("rollout", index)).remote(
            self.model_path, self.settings, seed=self.seed + index, colocated=self.place.shares_gpus,
            sharers=per_node(self.settings.num_workers), env=self.env)

    def members(self) -> list:
        """The workers in the pool now."""
        with self.lock:
            return list(self.workers)

    def actors(self) -> list:
        """The workers in the pool and the replacements still starting."""
        with self.lock:
            return self.workers + list(self.joining)

    def sleep(self) -> None:
        """Colocated placement: every worker's vLLM frees its GPU memory."""
        ray.get([w.sleep.remote() for w in self.members()])

    def wake(self, tags: list[str] | None = None) -> None:
        """Colocated placement: every worker's vLLM takes back its ``tags`` memory (None: all of it)."""
        ray.get([w.wake.remote(tags) for w in self.members()])

    def load_model(self, path: str) -> None:
        """Every worker loads the model in folder ``path`` (the same architecture) in place of the one it has; a
        replacement started later starts from it."""
        with self.lock:
            self.model_path, self.weights = path, None
        ray.get([w.load_model.remote(path) for w in self.members()])

    def _load(self, worker) -> ray.ObjectRef:
        """The newest weights and version pushed to ``worker`` (its first call: the engine's start-up included)."""
        return worker.update_weights.remote(*self.weights) if self.weights else worker.get_version.remote()

    def resize(self, count: int) -> None:
        """``count`` workers from the next call on: new ones loaded before traffic, leaving ones after their work.
        Raises ValueError, the pool unchanged, when the cluster has no room for the new ones now."""
        if self.place.shares_gpus and count != self.size:
            raise ValueError("a colocated run keeps one rollout worker beside each learner rank: its pool does not "
                             "change size (trainer.placement=separate scales)")
        self._admit()
        with self.lock:
            members = self.workers + list(self.joining)
        if count > len(members):
            free = ray.available_resources()
            short = self._short(free, count - len(members), "CPU", "GPU", *self.settings.resources)
            if short:
                need = self._need("CPU", "GPU", *self.settings.resources)
                raise ValueError(f"the cluster has too little free {', '.join(short)} for "
                                 f"{count - len(members)} more rollout workers (each needs "
                                 f"{', '.join(f'{k}={v:g}' for k, v in need.items())}; free: "
                                 f"{', '.join(f'{k}={free.get(k, 0.0):g}' for k in short)})")
            added = [self._start(i) for i in range(len(members), count)]
            try:
                ray.get([self._load(w) for w in added], timeout=START_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                for worker in added:
                    ray.kill(worker, no_restart=True)
                raise ValueError(f"the new rollout workers did not come up in {START_TIMEOUT_S:.0f} s "
                                 f"({type(exc).__name__}; rollout.label_selector={dict(self.settings.label_selector)})"
                                 ) from None
            with self.lock:
                self.workers += added
        for worker in reversed(members[count:]):
            with self.lock:
                if worker in self.joining:
                    del self.joining[worker]
                    ray.kill(worker, no_restart=True)
                    continue
                self.workers.remove(worker)
                self.speed.pop(worker, None)
            worker.__ray_terminate__.remote()  # runs after the calls already queued on it

    def _need(self, *keys: str) -> dict[str, float]:
        """What one worker asks Ray for, of the resources ``keys`` (those it asks none of left out)."""
        need = {"CPU": self.settings.num_cpus, "GPU": self.settings.num_gpus, **self.settings.resources}
        return {key: need[key] for key in keys if need.get(key, 0.0) > 0}

    def _short(self, have: dict[str, float], count: int, *keys: str) -> list[str]:
        """The resources among ``keys`` of which ``have`` holds less than ``count`` workers need, sorted."""
        return sorted(k for k, v in self._need(*keys).items() if have.get(k, 0.0) < v * count)

    def _hostable(self, count: int) -> bool:
        """Whether the cluster still has the custom resources and GPUs for ``count`` workers."""
        return not self._short(ray.cluster_resources(), count, "GPU", *self.settings.resources)

    def _replace(self, dead, tries: int = 3) -> None:
        """Start a replacement for ``dead`` (a worker of the pool, or a replacement that died starting) without
        waiting for it; or give it up, the pool one smaller, when the cluster can no longer host it or ``tries`` ran
        out (a replacement placed on a node whose loss Ray has not noticed yet dies too)."""
        ray.kill(dead, no_restart=True)
        with self.lock:
            if dead in self.workers:
                self.workers.remove(dead)
                self.speed.pop(dead, None)
            elif dead in self.joining:
                tries = self.joining.pop(dead)[1]
            else:  # already replaced (by the other thread) or let go
                return
            if tries == 0 or not self._hostable(self.size + 1):
                self.faults["lost"] += 1
                print(f"no node has the resources for another rollout worker (rollout.resources="
                      f"{dict(self.settings.resources)}, rollout.num_gpus={self.settings.num_gpus}): going on with "
                      f"{self.size}", flush=True)
                return
            worker = self._start(self.size)
            self.joining[worker] = (self._load(worker), tries - 1)
            self.faults["restarts"] += 1

    def _admit(self, wait: bool = False) -> None:
        """Replacements whose engines are up (all of them, or one at least with ``wait``) join the pool."""
        while True:
            with self.lock:
                joining = dict(self.joining)
            if not joining:
                return
            done, _ = ray.wait([push for push, _ in joining.values()], num_returns=1, timeout=None if wait else 0)
            if not done:
                return
            for worker, (push, _) in joining.items():
                if push in done:
                    try:
                        ray.get(push)
                    except ray.exceptions.RayActorError:
                        self._replace(worker)
                        continue
                    with self.lock:
                        if self.joining.pop(worker, None) is not None:
                            self.workers.append(worker)
                    wait = False

    def _spread(self, method: str, items: list, seed: int | None, *args, **kwargs) -> list:
        """``method(items[a:b], *args, seed=seed + a, **kwargs)`` on each worker's contiguous share; the results in
        order. A share whose worker died is run again once, on the fastest worker left."""
        self._admit()
        with self.lock:
            workers = list(self.workers)
        if not workers:
            workers = [self._survivor()]
        speeds = [self.speed.get(w) for w in workers] if self.settings.balance == "speed" else [None] * len(workers)
        shares = [(w, a, b) for w, (a, b) in zip(workers, weighted_split(len(items), speeds)) if b > a]

        def call(worker, a, b):
            return getattr(worker, method).remote(items[a:b], *args, seed=None if seed is None else seed + a, **kwargs)

        start = time.perf_counter()
        futures = {call(*share): share for share in shares}
        results, pending, timed = {}, list(futures), True
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            worker, a, b = futures[done[0]]
            try:
                results[a] = ray.get(done[0])
            except ray.exceptions.RayActorError:
                print(f"rollout worker {workers.index(worker)} died; replacing it and generating its {b - a} items "
                      "again", flush=True)
                self._replace(worker)
                self.faults["regenerated"] += b - a
                results[a] = ray.get(call(self._survivor(), a, b))
                timed = False  # the shares that finish after this waited for it
                continue
            if timed:
                rate = (b - a) / max(time.perf_counter() - start, 1e-6)
                self.speed[worker] = rate if worker not in self.speed else 0.5 * (self.speed[worker] + rate)
        return [results[a] for a in sorted(results)]

    def _survivor(self):
        """The fastest worker of the pool; with none left, the first replacement to come up."""
        while True:
            with self.lock:
                if self.workers:
                    return max(self.workers, key=lambda w: self.speed.get(w, 0.0))
                if not self.joining:
                    raise RuntimeError("no rollout worker left: every one was lost and no node can host a new one")
            self._admit(wait=True)

    def generate(self, prompts: list[PromptRow], n: int, seed: int | None = None, greedy: bool = False) -> RolloutBatch:
        """``n`` samples per prompt, in prompt order; the worker taking prompts ``a:b`` samples with seed ``seed + a``."""
        return RolloutBatch.concat(self._spread("generate", prompts, seed, n, greedy=greedy))

    def complete(self, requests: list[Request], seed: int | None = None) -> list[list[Completion]]:
        """Each request's completions (``RolloutWorker.complete``), in request order; the worker taking
        requests ``a:b`` samples with seed ``seed + a``."""
        return [completions for part in self._spread("complete", requests, seed) for completions in part]

    def update_weights(self, state_dict_ref: ray.ObjectRef, version: int) -> None:
        # The ObjectRef goes to every worker; Ray moves the tensors once per node, not via the driver.
        with self.lock:
            self.weights = (state_dict_ref, version)
            workers = list(self.workers)
            for worker, (_, tries) in self.joining.items():  # queued after its start-up: it joins with these
                self.joining[worker] = (worker.update_weights.remote(state_dict_ref, version), tries)
        futures = [w.update_weights.remote(state_dict_ref, version) for w in workers]
        for i, (worker, future) in enumerate(zip(workers, futures)):
            try:
                ray.get(future)
            except ray.exceptions.RayActorError:
                print(f"rollout worker {i} died; replacing it", flush=True)
                self._replace(worker)


def weighted_split(count: int, speeds: list[float | None]) -> list[tuple[int, int]]:
    """(start, stop) of contiguous slices of ``count`` items, one per worker, sized in proportion to ``speeds``
    (largest remainders rounded up). A worker not measured yet counts as the mean of the measured ones; with none
    measured the slices are as even as possible (the first ones take the remainder)."""
    known = [v for v in speeds if v is not None and v > 0]
    mean = sum(known) / len(known) if known else 1.0
    weights = [v if v is not None and v > 0 else mean for v in speeds]
    exact = [count * w / sum(weights) for w in weights]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i] - exact[i])[: count - sum(sizes)]:
        sizes[i] += 1
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


class EnvPool:
    """``env.num_workers`` ``EnvWorker`` actors: the environments and tools of the rollout workers' episodes.

    Ray restarts an actor that dies (the handles the rollout workers hold stay
    valid); the episodes it held start again (``actors.episodes``)."""

    def __init__(self, cfg: EnvConfig, schemas: list[dict], ship: bool):
        actor = remote(EnvWorker, cfg, max_restarts=-1)
        self.workers = [actor.remote(cfg) for _ in range(cfg.num_workers)]
        self.ready = [w.ready.remote() for w in self.workers]
        self.client = EnvClient(self.workers, cfg, schemas, ship)


class RewardPool:
    """The actors of one reward term. Spreads samples over them and contains the term's faults:

    * a batch past ``timeout_s``: its actor is killed and replaced, its samples get ``failure_score``;
    * a dead actor: replaced, and its batch retried once on the replacement;
    * samples the reward raised on (reported by the worker): ``failure_score``.
    """

    def __init__(self, term: RewardTerm):
        self.term, self.settings = term, term.config
        self.actor = remote(RewardWorker, self.settings)
        self.workers = [self._start() for _ in range(self.settings.num_workers)]

    def _start(self):
        return self.actor.remote(self.term.name, self.term.target, dict(self.term.args), self.term.config.kind)

    def _replace(self, index: int) -> None:
        ray.kill(self.workers[index], no_restart=True)
        self.workers[index] = self._start()

    def submit(self, samples: list) -> list[tuple[int, int, int, ray.ObjectRef]]:
        """Send each actor its share; returns (actor index, start, stop, future) per share."""
        return [(w, a, b, self.workers[w].score.remote(samples[a:b]))
                for w, (a, b) in enumerate(_split(len(samples), len(self.workers))) if b > a]

    def collect(self, samples: list, pending: list
                ) -> tuple[list[dict[str, float] | None], dict[str, int], RewardFailure | None]:
        """Wait for the shares (each within ``timeout_s``); returns rows (None = failed), fault counts and the first
        failure (``RewardWorker.score``)."""
        rows: list[dict[str, float] | None] = [None] * len(samples)
        faults = {"errors": 0, "timeouts": 0, "restarts": 0}
        first: RewardFailure | None = None
        for w, a, b, future in pending:
            for attempt in (0, 1):
                ready, _ = ray.wait([future], timeout=self.settings.timeout_s)
                if not ready:
                    self._replace(w)
                    faults["timeouts"] += b - a
                    faults["restarts"] += 1
                    break
                try:
                    share, errors, failure = ray.get(future)
                except ray.exceptions.RayActorError:
                    self._replace(w)
                    faults["restarts"] += 1
                    if attempt == 0:  # retry the batch once on the new actor
                        future = self.workers[w].score.remote(samples[a:b])
                        continue
                    faults["errors"] += b - a
                    first = first or RewardFailure(f"the actor died twice scoring samples {a}..{b - 1}")
                    break
                rows[a:b] = share
                faults["errors"] += errors
                first = first or failure
                break
        return rows, faults, first


def fault_notice(name: str, kind: str, count: int, settings, message: str = "") -> str:
    """The one console line for a reward term's first ``kind`` of fault in a run (``errors``, with the error's
    ``message``, or ``timeouts``) that hit ``count`` samples; ``settings`` is the term's ``RewardTermConfig``."""
    samples = f"{count} sample{'s' * (count != 1)}"
    what = (f"{samples} timed out after {settings.timeout_s:g} s (timeout_s={settings.timeout_s:g}; "
            if kind == "timeouts" else f"{samples} failed: {message} (")
    return (f"reward '{name}': {what}{count} so far, scored failure_score={settings.failure_score}); "
            f"further {kind} are counted in reward_faults/{name}/{kind}")


class RewardGroup:
    """One ``RewardPool`` per reward term; all terms score a batch at the same time."""

    def __init__(self, terms: list[RewardTerm]):
        self.pools = [RewardPool(term) for term in terms]
        self.lock = threading.Lock()  # a pipelined run scores from the collect thread and evaluates from the main one
        self.ready = [w.ready.remote() for pool in self.pools for w in pool.workers]  # fails early on a bad reward
        self.noticed: set[tuple[str, str]] = set()  # (term, "errors" or "timeouts") already printed

    def score(self, batch: RolloutBatch) -> dict[str, float]:
        """Fill ``batch.scores`` (weighted sum) and ``batch.reward_terms``; returns fault metrics.

        A failed sample gets its term's ``failure_score``. A term's first error and
        first timeout are printed, one line each (``notice``); later ones are only counted.
        Each sample's ``prompt`` is the user's text (``batch.user_prompts``), its
        ``rendered_prompt`` what the policy saw (``batch.prompts``).
        """
        with self.lock:
            return self._score(batch)

    def _score(self, batch: RolloutBatch) -> dict[str, float]:
        thinking = batch.thinking_tokens.tolist() if batch.thinking_tokens is not None else [-1] * len(batch)
        users = batch.user_prompts or batch.prompts
        chats = batch.prompt_messages or [None] * len(batch)
        samples = [RewardSample(u, r, ids, a, m, None if t < 0 else t, rendered_prompt=p, prompt_messages=c)
                   for u, p, r, ids, a, m, t, c in zip(users, batch.prompts, batch.responses, batch.response_ids,
                                                       batch.answers, batch.metadata, thinking, chats)]
        if batch.messages is not None:  # multi-turn episodes: what rewards may read of them
            environments = batch.environments or [None] * len(samples)
            samples = [dataclasses.replace(s, messages=msgs, environment=env, env_return=None if math.isnan(r) else r)
                       for s, msgs, env, r in zip(samples, batch.messages, environments, batch.env_returns.tolist())]
        pending = [pool.submit(samples) for pool in self.pools]  # every term at once
        total = torch.zeros(len(samples))
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, float] = {}
        for pool, futures in zip(self.pools, pending):
            name, failure = pool.term.name, pool.settings.failure_score
            rows, faults, first = pool.collect(samples, futures)
            value = torch.tensor([term_value(row) if row else failure for row in rows])
            terms[name] = value  # NaN where the reward said "not applicable" (None, TRL's convention)
            for key in sorted({k for row in rows if row for k in row} - {""}):  # named parts ("_x" logged as "x")
                terms[f"{name}/{key.lstrip('_')}"] = torch.tensor([row.get(key, 0.0) if row else failure for row in rows])
            total += pool.settings.weight * value.nan_to_num(0.0)  # the other terms still count
            metrics.update({f"reward_faults/{name}/{k}": float(v) for k, v in faults.items()})
            self.notice(pool, faults, first)
        batch.scores, batch.reward_terms = total, terms
        return metrics

    def notice(self, pool: RewardPool, faults: dict[str, int], failure: RewardFailure | None) -> None:
        """Print the term's first error (then its traceback) and its first timeout of the run, one line each: a
        fault is not only a number in metrics.jsonl. Later ones are counted there only (``reward_faults/<term>/``)."""
        name = pool.term.name
        for kind in ("errors", "timeouts"):
            if not faults[kind] or (name, kind) in self.noticed:
                continue
            self.noticed.add((name, kind))
            message = failure.message if failure else "no error message"
            line = fault_notice(name, kind, faults[kind], pool.settings, message)
            if kind == "errors" and failure and failure.traceback:
                line += f"; its traceback:\n{failure.traceback.rstrip()}"
            print(line, flush=True)


class ReferenceGroup:
    """One reference actor (the frozen initial policy). If it dies it is replaced (its weights are the frozen ones
    on disk) and the step's log-probs computed again; ``faults["restarts"]`` counts this."""

    def __init__(self, cfg: Config, model_path: str, place: Separate | Colocated = SEPARATE):
        rc = cfg.reference
        self.cfg, self.model_path = cfg, model_path
        self.actor = remote(ReferenceWorker, rc).options(**place.options("reference", 0))
        self.worker = self.actor.remote(cfg, model_path)
        self.ready = [self.worker.__ray_ready__.remote()]
        self.faults = {"restarts": 0}
        _HOLDERS.add(self)

    def actors(self) -> list:
        return [self.worker]

    def logprobs(self, shipment: Shipment) -> torch.Tensor:
        try:
            return ray.get(_sliced([self.worker], shipment, TOKEN_FIELDS, "logprobs")[0])
        except ray.exceptions.RayActorError:
            print("reference worker died; replacing it and computing the step's log-probs again", flush=True)
            ray.kill(self.worker, no_restart=True)
            self.worker = self.actor.remote(self.cfg, self.model_path)
            self.faults["restarts"] += 1
            return ray.get(_sliced([self.worker], shipment, TOKEN_FIELDS, "logprobs")[0])


class TeacherGroup:
    """``count`` teacher actors (token-level distillation), each giving its top-k log-probs for a slice of the batch.
    One that dies is replaced (its weights are the frozen ones on disk) and the step's slices computed again;
    ``faults["restarts"]`` counts this."""

    def __init__(self, cfg: Config, model_path: str, settings: ReferenceConfig, count: int):
        self.actor = remote(TeacherWorker, settings)
        self.args = (cfg, model_path, settings)
        self.workers = [self.actor.remote(*self.args) for _ in range(count)]
        self.ready = [w.__ray_ready__.remote() for w in self.workers]
        self.faults = {"restarts": 0}
        _HOLDERS.add(self)

    def actors(self) -> list:
        return list(self.workers)

    def topk(self, shipment: Shipment, k: int, temperature: float,
             hidden_layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(log-probs [B, T, k], ids [B, T, k], hidden [B, T, L, H] or None)`` of the shipped batch
        (``TeacherWorker.topk``), in its order."""
        parts, dead = self._topk(shipment, k, temperature, hidden_layers)
        if dead:
            print(f"teacher worker{'s' * (len(dead) > 1)} {', '.join(map(str, dead))} died; replacing and computing "
                  "the step's top-k again", flush=True)
            for i in dead:
                self.workers[i] = self.actor.remote(*self.args)
            self.faults["restarts"] += len(dead)
            parts, dead = self._topk(shipment, k, temperature, hidden_layers)
            if dead:
                raise RuntimeError(f"teacher worker{'s' * (len(dead) > 1)} {', '.join(map(str, dead))} died twice "
                                   "in one step")
        values, ids, hidden = zip(*parts)
        return shipment.joined(list(values)), shipment.joined(list(ids)), \
            shipment.joined(list(hidden)) if hidden_layers else None

    def _topk(self, shipment: Shipment, k: int, temperature: float,
              hidden_layers: tuple[int, ...]) -> tuple[list, list[int]]:
        """Each worker's slice; the indices of the workers that died instead of answering."""
        parts, dead = [], []
        for i, future in enumerate(_sliced(self.workers, shipment, TOKEN_FIELDS, "topk", k=k, temperature=temperature,
                                           hidden_layers=hidden_layers)):
            try:
                parts.append(ray.get(future))
            except ray.exceptions.RayActorError:
                dead.append(i)
        return parts, dead


class ReferenceInPolicy:
    """The reference inside the policy's learner ranks (``reference.host=policy``): each rank scores its slice of the
    batch with its frozen copy. A rank that dies is its group's ``LearnerDied``; the driver restarts the group, and
    the copies with it."""

    def __init__(self, policy: LearnerGroup):
        self.policy = policy
        self.ready: list[ray.ObjectRef] = []  # the policy group's readiness covers it
        self.faults = {"restarts": 0}

    def logprobs(self, shipment: Shipment) -> torch.Tensor:
        return self.policy.reference_logprobs(shipment)


class LearnerDied(RuntimeError):
    """A rank of a learner group died: its torch.distributed group cannot go on (``LearnerGroup.restart``)."""

    def __init__(self, group: str, ranks: list[int], cause: BaseException):
        super().__init__(f"learner group '{group}' lost rank{'s' * (len(ranks) > 1)} "
                         f"{', '.join(map(str, ranks))} ({type(cause).__name__})")
        self.group = group


class LearnerGroup:
    """``world_size`` ranks of one learner group (``LearnerRank``) forming one torch.distributed group.

    Every call waits for all ranks and fails as soon as one of them dies, with
    ``LearnerDied``: the survivors would wait for it in a collective. ``restart``
    replaces the whole group with fresh ranks (the initial weights), for the
    driver to load a checkpoint into.
    """

    def __init__(self, cfg: Config, algorithm, name: str, spec: LearnerSpec, model_cls: type,
                 place: Separate | Colocated = SEPARATE, reference_path: str | None = None):
        self.name, self.spec = name, spec
        self.place = place
        self.actor = remote(LearnerRank, spec.settings)
        self.args = (cfg, algorithm, name, spec, model_cls)
        self.reference_path = reference_path  # each rank also hosts the frozen reference (``ReferenceInPolicy``)
        self.restarts = 0
        self._start()
        _HOLDERS.add(self)

    def actors(self) -> list:
        return list(self.ranks)

    def _start(self) -> None:
        world_size = self.spec.settings.world_size
        self.ranks = [self.actor.options(**self.place.options("learner", rank)).remote(
            *self.args, rank, world_size, self.reference_path) for rank in range(world_size)]
        address = self.ranks[0].address.remote()  # rank 0 hosts the group; Ray passes the result on
        self.ready = [r.setup.remote(address) for r in self.ranks]

    def restart(self) -> None:
        """Kill every rank and start a new group from the initial weights; returns once it has formed."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        self._start()
        self.restarts += 1
        self._get(self.ready)

    def _get(self, refs: list[ray.ObjectRef]) -> list:
        """``ray.get(refs)``, one future per rank, raising ``LearnerDied`` as soon as a rank dies (or a rank fails
        because another died: its collective broke)."""
        results, pending = {}, list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                results[done[0]] = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                raise LearnerDied(self.name, self._dead(), exc) from exc
            except ray.exceptions.RayTaskError:
                dead = self._dead()
                if dead:
                    raise LearnerDied(self.name, dead, RuntimeError("a collective with it failed")) from None
                raise
        return [results[ref] for ref in refs]

    def _dead(self, timeout_s: float = 5.0) -> list[int]:
        """The ranks that no longer answer because they died (a rank still busy in a collective is alive)."""
        dead = []
        for i, rank in enumerate(self.ranks):
            try:
                ray.get(rank.__ray_ready__.remote(), timeout=timeout_s)
            except ray.exceptions.RayActorError:
                dead.append(i)
            except ray.exceptions.GetTimeoutError:
                pass
        return dead

    def forward(self, shipment: Shipment, output: str) -> torch.Tensor:
        """[B, T] model output ``output`` under the current weights, each rank on its slice."""
        return shipment.joined(self._get(_sliced(self.ranks, shipment, TOKEN_FIELDS, "forward", output=output)))

    def reference_logprobs(self, shipment: Shipment) -> torch.Tensor:
        """[B, T] the reference's log-probs, each rank on its slice with the copy it hosts."""
        return shipment.joined(self._get(_sliced(self.ranks, shipment, TOKEN_FIELDS, "reference_logprobs")))

    def train_step(self, shipment: Shipment, step: int, state: dict) -> dict[str, float]:
        """One update on the batch; the ranks' metrics (averaged, ``*_max`` the largest) as ``<group>/<metric>``,
        with the group's throughput."""
        start = time.perf_counter()
        results = self._get(_sliced(self.ranks, shipment, TRAIN_FIELDS, "train_step", step=step, state=state))
        tokens = shipment.batch.num_response_tokens * self.spec.settings.epochs
        metrics = {f"{self.name}/{k}": max(m[k] for m in results) if k.endswith("_max") else
                   sum(m[k] for m in results) / len(results) for k in results[0]}
        metrics[f"throughput/{self.name}_tokens_per_s"] = tokens / max(time.perf_counter() - start, 1e-9)
        return metrics

    def state_dict_ref(self) -> ray.ObjectRef:
        """An ObjectRef to the gathered full weights (every rank takes part; rank 0 returns them)."""
        refs = [r.full_state_dict.remote() for r in self.ranks]
        self._get(refs[1:])  # surfaces any rank's error here
        ray.wait(refs[:1])
        self._get([self.ranks[0].__ray_ready__.remote()])  # rank 0 alive: it did return the weights
        return refs[0]

    def send_weights(self, workers: list, version: int) -> None:
        """Colocated placement: every rank hands the weights to the vLLM engine on its GPU (``LearnerRank.send_weights``)."""
        self._get([r.send_weights.remote(workers, version) for r in self.ranks])

    def export(self, path: str) -> None:
        self._get([r.export.remote(path) for r in self.ranks])

    def save_checkpoint(self, path: str) -> None:
        self._get([r.save_checkpoint.remote(path) for r in self.ranks])

    def load_checkpoint(self, path: str) -> None:
        self._get([r.load_checkpoint.remote(path) for r in self.ranks])

    def shutdown(self) -> None:
        self._get([r.shutdown.remote() for r in self.ranks])
