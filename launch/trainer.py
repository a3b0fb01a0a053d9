"""The driver: moves batches between the roles, step after step.

    for each step:
        batch    <- the source (the policy's scored samples, or preference pairs)       collect
        ref lp   <- the reference worker                                                  learn
        provides <- each learner group, under the weights before the update (old log-probs, values)
        adv      <- the algorithm
        update   <- each learner group the algorithm trains this step, in order
        weights  -> the source's rollout workers, tagged with the new version

With ``rollout.max_staleness = k > 0`` the collect half of the next k steps
runs while the learn half of this one does (``launch.collector``).

It receives built parts (``launch/build.py``), knows no algorithm, source or
reward by name, and merges the metric dictionaries the parts return.
"""

from __future__ import annotations

import copy
import signal
import sys
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actors.groups import LearnerDied, LearnerGroup, ReferenceGroup, ReferenceInPolicy, Shipment, wait_ready
from actors.placement import placement
from launch.build import Data, Plan
from launch.checkpoints import CheckpointError, Checkpoints
from launch.collector import Collector, staleness
from launch.scale import ScaleRequests
from launch.sources import Collected, Roles, timed
from rlcore.config import reference_in_policy, to_yaml
from rlcore.metrics import MetricsLogger

POLICY = "actor"
"""The learner group whose weights the rollout workers sample with and that is exported."""


class Trainer:
    def __init__(self, plan: Plan, data: Data | Future, stop: StopRequest | None = None):
        """``data``: the rendered rows, or the future of ``launch.build.render`` still at work (``launch.train``), taken
        once the learners have started; its errors are raised from here."""
        self.cfg, self.algorithm = plan.cfg, plan.algorithm
        self.out = Path(self.cfg.trainer.output_dir).expanduser().resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(self.cfg))
        # Every role starts at once (vLLM engines, learner groups, reference, reward workers), then we wait for all;
        # on shared GPUs the vLLM engines first (``start_roles``).
        start = time.perf_counter()
        place = placement(self.cfg, {name: g.spec.settings for name, g in plan.learners.items()})
        self.learners, self.reference, self.source = self.start_roles(plan, data, place)
        self.startup_s = time.perf_counter() - start
        print(f"roles ready in {self.startup_s:.1f}s", flush=True)
        self.checkpoints = Checkpoints(self.out / "checkpoints", self.learners, self.cfg.trainer.keep_checkpoints,
                                       fatal=(LearnerDied,))
        self.version = 0
        self.step = self.restarts = 0  # the step in progress; learner groups restarted after a lost rank
        self.initial_state = copy.deepcopy(self.algorithm.state_dict())  # a restart without a checkpoint goes back to it
        self.skipped = SkippedUpdates(self.cfg.trainer.max_skipped_steps)
        self.stop = stop or StopRequest()  # not installed: only launch.train's main owns the process's signals
        self.requests = ScaleRequests(self.out)  # launch.scale's requests, taken before each step
        self.logger = MetricsLogger(self.out, self.cfg.trainer.total_steps, self.cfg.trainer.loggers, asdict(self.cfg))

    def start_roles(self, plan: Plan, data: Data | Future,
                    place) -> tuple[dict[str, LearnerGroup], ReferenceGroup | ReferenceInPolicy | None, Any]:
        """The learner groups, the reference (its own actor, or inside the policy's ranks: ``reference.host``) and
        the source, started and ready. The source, which takes the rows, starts once they are rendered: on a CPU the
        learners' start hides the check of an SFT set's every row. Where they share the GPUs
        (``trainer.placement=colocated``) the source's vLLM engines start, and are ready, before the others: vLLM
        refuses to start unless ``rollout.gpu_memory_utilization`` of its GPU is free, and the learners and the
        reference then take what it leaves."""
        def source_of(data: Data | Future):
            data = data.result() if isinstance(data, Future) else data
            return plan.source(self.cfg, plan.algorithm, roles, data.train, data.eval)

        roles = Roles(plan.reward_terms, {}, None, place, plan.tools, plan.ship_environments)
        source = source_of(data) if place.shares_gpus else None
        if source is not None:
            wait_ready([source])
        reference_path = self.cfg.reference.path or self.cfg.model.path
        in_policy = reference_in_policy(self.cfg) and POLICY in plan.learners
        roles.learners.update({name: LearnerGroup(self.cfg, plan.algorithm, name, g.spec, g.model, place,
                                                  reference_path if in_policy and name == POLICY else None)
                               for name, g in plan.learners.items()})
        roles.reference = (ReferenceInPolicy(roles.learners[POLICY]) if in_policy else
                           ReferenceGroup(self.cfg, reference_path, place) if self.cfg.reference.enabled else None)
        source = source or source_of(data)
        wait_ready([*roles.learners.values(), *([roles.reference] if roles.reference else []), source])
        return roles.learners, roles.reference, source

    def fit(self) -> Path | None:
        tc = self.cfg.trainer
        first = self.resume() + 1 if tc.resume else 1
        if first == 1 and _due(0, tc.eval_every):
            self.logger.log(0, self.evaluate())
        while first <= tc.total_steps:
            try:
                self.steps(first)
                break
            except LearnerDied as exc:
                first = self.recover(exc) + 1
        self.logger.close()
        if not tc.export:
            return None
        self.learners[POLICY].export(str(self.out / "final"))
        return self.out / "final"

    def steps(self, first: int) -> None:
        """Steps ``first`` … ``total_steps``: collect, learn, log, evaluate and save as due."""
        tc = self.cfg.trainer
        collector = Collector(self.source, self.cfg.rollout.max_staleness, tc.total_steps)
        collector.start(first)
        try:
            for step in range(first, tc.total_steps + 1):
                self.step = step
                pool = self.scaled(step)
                start = time.perf_counter()
                collected = collector.take(step)
                metrics = {"time/collect_wait": time.perf_counter() - start, **pool, **self.learn(step, collected)}
                collector.synced(step)
                metrics["time/step"] = time.perf_counter() - start
                metrics["throughput/tokens_per_s"] = collected.batch.num_response_tokens / metrics["time/step"]
                if step == first:
                    metrics["time/startup"] = self.startup_s
                last = step == tc.total_steps
                if _due(step, tc.eval_every) or (last and tc.eval_every):
                    metrics.update(self.evaluate())
                self.logger.log(step, metrics)
                self.logger.log_samples(step, collected.summary())
                if _due(step, tc.save_every) or last or self.stop.signum is not None:
                    self.checkpoints.save(step, {"policy_version": self.version,
                                                 "algorithm": self.algorithm.state_dict()})
                if self.stop.signum is not None and not last:
                    raise Stopped(self.stop.signum, step, self.checkpoints.root / f"step_{step:06d}")
        finally:
            collector.close()

    def learn(self, step: int, collected: Collected) -> dict[str, float]:
        """The learn half of a step: reference and pre-update passes, advantages, updates, weights to the rollout."""
        timings: dict[str, float] = {}
        batch = collected.batch
        metrics = staleness(batch.policy_version, self.version, self.cfg.rollout.max_staleness, step)
        shipment = Shipment(batch)  # each field goes to the object store once, read by every role
        if self.reference is not None:
            with timed(timings, "time/reference"):
                batch.ref_logprobs = self.reference.logprobs(shipment)
            metrics["faults/reference/restarts"] = float(self.reference.faults["restarts"])
        metrics.update({f"faults/{name}/restarts": float(g.restarts) for name, g in self.learners.items()})
        for name, group in self.learners.items():
            with timed(timings, f"time/{name}"):
                for key, output in group.spec.provides.items():
                    setattr(batch, key, group.forward(shipment, output))
        advantage_metrics = self.algorithm.compute_advantages(batch) or {}
        metrics.update({f"algorithm/{k}": v for k, v in advantage_metrics.items()})
        state = self.algorithm.state_dict()  # the driver-side state the losses see
        for name, group in self.learners.items():
            if self.algorithm.trains(name, step):
                with timed(timings, f"time/{name}"):
                    metrics.update(group.train_step(shipment, step, state))
        self.skipped.check(step, metrics)
        if self.algorithm.trains(POLICY, step):
            with timed(timings, "time/weight_sync"):
                self.version += 1
                self.source.sync(self.learners[POLICY], self.version)
        return {**collected.stats, **metrics, **timings, "policy_version": self.version}

    def scaled(self, step: int) -> dict[str, float]:
        """Apply a pending ``launch.scale`` request to the source's rollout pool (a source that samples keeps its
        ``RolloutGroup`` as ``rollout``); its size as ``rollout/num_workers``."""
        rollout = getattr(self.source, "rollout", None)
        request = self.requests.take()
        if request is not None:
            count = request["num_workers"]
            if rollout is None:
                self.requests.reply(request, error="this run has no rollout workers (its source does not sample)")
            elif count > self.cfg.data.prompts_per_step:
                self.requests.reply(request, error=f"{count} workers would leave some idle: "
                                    f"data.prompts_per_step={self.cfg.data.prompts_per_step}")
            else:
                before = rollout.size
                try:
                    rollout.resize(count)
                except ValueError as exc:
                    self.requests.reply(request, error=str(exc))
                else:
                    print(f"step {step}: rollout pool resized from {before} to {count} workers (launch.scale)",
                          flush=True)
                    self.requests.reply(request, before=before, after=count, step=step)
        return {"rollout/num_workers": float(rollout.size)} if rollout is not None else {}

    def evaluate(self) -> dict[str, float]:
        timings: dict[str, float] = {}
        with timed(timings, "time/eval"):
            metrics = self.source.evaluate()
        return {**metrics, **timings} if metrics else {}

    def resume(self) -> int:
        """Load the newest complete checkpoint; returns its step (0 if there is none). The logs keep what the
        earlier run recorded up to that step: the steps after it are done again."""
        try:
            found = self.checkpoints.restore()
        except CheckpointError as exc:
            raise TrainingError(f"trainer.resume=true: {exc}; start afresh with trainer.overwrite=true") from None
        if found is None:
            print(f"trainer.resume=true but no checkpoint in {self.checkpoints.root}: starting at step 0", flush=True)
            self.logger.rewind(0)
            return 0
        path, state = found
        self.restored(state)
        self.logger.rewind(state["step"])
        print(f"resumed from {path} at step {state['step']}", flush=True)
        return state["step"]

    def restored(self, state: dict) -> None:
        """The driver's side of a loaded checkpoint: the algorithm's state, the policy version, the rollout weights."""
        self.algorithm.load_state_dict(state["algorithm"])
        self.version = state["policy_version"]
        self.source.sync(self.learners[POLICY], self.version)

    def recover(self, died: LearnerDied) -> int:
        """After a learner rank died in step ``self.step``: restart its group and go back to the newest complete
        checkpoint (or to the start, every group afresh, when there is none); returns that checkpoint's step.
        Past ``trainer.max_restarts`` recoveries the run stops with a ``TrainingError``."""
        limit = self.cfg.trainer.max_restarts
        if self.restarts >= limit:
            raise TrainingError(f"step {self.step}: {died}, after {limit} restarts (trainer.max_restarts={limit}); "
                                f"resume from the newest checkpoint in {self.checkpoints.root} with "
                                "trainer.resume=true") from died
        self.restarts += 1
        found = self.checkpoints.completed()
        for name, group in self.learners.items():
            if name == died.group or not found:
                group.restart()
        try:
            path, state = self.checkpoints.restore() if found else (
                "the initial weights", {"step": 0, "policy_version": 0, "algorithm": self.initial_state})
        except CheckpointError as exc:
            raise TrainingError(f"step {self.step}: {died}, and {exc}") from None
        self.restored(state)
        back = state["step"]
        redo = f"step {self.step}" if back == self.step - 1 else f"steps {back + 1}..{self.step}"
        print(f"step {self.step}: {died}; restarted it ({self.restarts} of trainer.max_restarts={limit}) from {path}: "
              f"redoing {redo}", flush=True)
        return back


class TrainingError(RuntimeError):
    """The run cannot go on; the message is one line that says why and what to do."""


class Stopped(Exception):
    """The run stopped on request (SIGINT or SIGTERM) after a step, with a checkpoint of that step."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint}; "
                         "resume with the same command and trainer.resume=true")
        self.signum = signum


class StopRequest:
    """A signal handler for SIGINT and SIGTERM: the first asks the run to stop after the step in progress (with a
    checkpoint), a second abandons the step at once (``KeyboardInterrupt``)."""

    def __init__(self):
        self.signum: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self)

    def __call__(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint (again: stop now, "
              "without one)", file=sys.stderr, flush=True)


class SkippedUpdates:
    """Stops the run when a learner group skipped its update (``<group>/skipped_steps`` > 0) in ``limit`` training
    steps in a row (0: never)."""

    def __init__(self, limit: int):
        self.limit, self.streak = limit, {}

    def check(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not key.endswith("/skipped_steps"):
                continue
            group = key.split("/")[0]
            self.streak[group] = self.streak.get(group, 0) + 1 if value > 0 else 0
            if self.limit and self.streak[group] >= self.limit:
                raise TrainingError(
                    f"step {step}: learner group '{group}' skipped its update (a non-finite loss or gradient norm) "
                    f"{self.streak[group]} steps in a row (trainer.max_skipped_steps={self.limit}); lower its lr or "
                    "check the rewards, then resume from the last checkpoint with trainer.resume=true")


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0
