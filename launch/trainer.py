"""The driver: moves batches between the role groups, step after step.

    for each step:
        batch    <- the source: rollout workers sample, reward workers score,
                    the algorithm shapes and filters (or: preference pairs)
        ref lp   <- reference worker
        values   <- critic (if the algorithm has one)
        adv      <- the algorithm
        update   <- critic, then the FSDP policy learners
        weights  -> rollout workers, tagged with the new version

The algorithm plug-in declares the roles it needs and supplies the maths; there
is no per-algorithm branch here.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from actors.groups import CriticGroup, LearnerGroup, ReferenceGroup
from algorithms import get_algorithm_class
from launch.sources import Collected, PreferenceSource, RolloutSource, accuracy, timed
from rewards.l1 import length_metrics
from rlcore.batch import RolloutBatch
from rlcore.config import Config, to_yaml
from rlcore.metrics import MetricsLogger

STATE_FILE = "trainer_state.json"


class Trainer:
    def __init__(self, cfg: Config, model_path: str, train_rows: list, eval_rows: list):
        self.cfg = cfg
        self.out = Path(cfg.trainer.output_dir).expanduser().resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        self.algorithm = get_algorithm_class(cfg.algorithm.name)(cfg)
        # Learners first: their process group must form while the CPUs are still quiet.
        self.learners = LearnerGroup(cfg, model_path)
        self.critic = CriticGroup(cfg, model_path) if self.algorithm.uses_critic else None
        self.reference = ReferenceGroup(cfg, model_path) if cfg.reference.enabled else None
        if self.algorithm.uses_rollout:
            self.source = RolloutSource(cfg, model_path, self.algorithm, train_rows, eval_rows)
        else:
            self.source = PreferenceSource(cfg, model_path, train_rows, eval_rows, self.learners, self.reference)
        self.version = 0
        self.logger = MetricsLogger(self.out, cfg.trainer.total_steps, cfg.trainer.tensorboard)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> Path | None:
        tc = self.cfg.trainer
        step = self.resume() if tc.resume else 0
        if step == 0 and self._due(0, tc.eval_every):
            self.logger.log(0, self.evaluate())
        for step in range(step + 1, tc.total_steps + 1):
            metrics, collected = self.train_step(step)
            last = step == tc.total_steps
            if self._due(step, tc.eval_every) or (last and tc.eval_every):
                metrics.update(self.evaluate())
            self.logger.log(step, metrics)
            self.logger.log_samples(step, sample_summary(collected))
            if self._due(step, tc.save_every) or last:
                self.save_checkpoint(step)
        self.logger.close()
        if tc.export:
            final = self.out / "final"
            self.learners.export(str(final))
            return final
        return None

    def train_step(self, step: int) -> tuple[dict[str, float], Collected]:
        timings: dict[str, float] = {}
        learner_metrics: dict[str, float] = {}
        with timed(timings, "step"):
            collected = self.source.collect(step, timings)
            batch = collected.batch
            if self.reference is not None:
                with timed(timings, "reference"):
                    batch.ref_logprobs = self.reference.logprobs(batch)
            if self.critic is not None:
                with timed(timings, "critic"):
                    batch.values = self.critic.values(batch)
            algorithm_metrics = self.algorithm.compute_advantages(batch) or {}
            if self.critic is not None:
                with timed(timings, "critic"):
                    learner_metrics.update({f"critic/{k}": v for k, v in self.critic.train_step(batch).items()})
            if self.algorithm.updates_policy(step):
                with timed(timings, "learner"):
                    learner_metrics.update({f"actor/{k}": v for k, v in self.learners.train_step(batch).items()})
                with timed(timings, "weight_sync"):
                    self.version += 1
                    self.source.update_weights(self.learners, self.version)
        metrics = {**self.batch_metrics(collected.scored), **self.timing_metrics(timings, batch, learner_metrics),
                   **{k: v for k, v in learner_metrics.items() if "learner_" not in k},
                   **{f"algorithm/{k}": v for k, v in algorithm_metrics.items()},
                   **collected.stats, "policy_version": self.version}
        return metrics, collected

    # ---- metrics --------------------------------------------------------------------------
    def batch_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        lengths = batch.response_mask.sum(-1)
        metrics = {
            "reward/mean": batch.scores.mean().item(),
            "reward/std": batch.scores.std().item() if len(batch) > 1 else 0.0,
            "response_length/mean": lengths.mean().item(),
            "response_length/max": lengths.max().item(),
            "response_length/truncated_frac": batch.truncated.float().mean().item(),
        }
        if self.cfg.reward.accuracy_term in batch.reward_terms:
            metrics["accuracy"] = accuracy(self.cfg, batch)
        metrics.update({f"reward/{name}": v.mean().item() for name, v in batch.reward_terms.items()})
        targets = [m.get("target_tokens") for m in batch.metadata]
        if targets and None not in targets:  # L1 length control: how far from the asked length
            metrics.update(length_metrics(targets, lengths.long().tolist(), self.cfg.data.length_target_mode))
        return metrics

    @staticmethod
    def timing_metrics(timings: dict[str, float], batch: RolloutBatch, learner: dict[str, float]) -> dict[str, float]:
        tokens = batch.num_response_tokens
        out = {f"time/{k}": v for k, v in timings.items()}
        if "rollout" in timings:
            out["throughput/rollout_tokens_per_s"] = tokens / max(timings["rollout"], 1e-9)
        if "actor/learner_tokens" in learner:
            out["throughput/learner_tokens_per_s"] = learner["actor/learner_tokens"] / max(timings["learner"], 1e-9)
        out["throughput/tokens_per_s"] = tokens / max(timings["step"], 1e-9)
        return out

    def evaluate(self) -> dict[str, float]:
        start = time.perf_counter()
        metrics = self.source.evaluate()
        return {**metrics, "time/eval": time.perf_counter() - start} if metrics else {}

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self, step: int) -> None:
        path = self.checkpoint_root / f"step_{step:06d}"
        if path.exists():
            shutil.rmtree(path)
        self.learners.save_checkpoint(str(path / "learner"))
        if self.critic is not None:
            self.critic.save_checkpoint(str(path / "critic"))
        # Written last: a checkpoint without it is incomplete and ignored on resume.
        state = {"step": step, "policy_version": self.version, "algorithm": self.algorithm.state_dict()}
        (path / STATE_FILE).write_text(json.dumps(state))
        for old in completed_checkpoints(self.checkpoint_root)[: -self.cfg.trainer.keep_checkpoints]:
            shutil.rmtree(old)

    def resume(self) -> int:
        """Load the newest complete checkpoint; returns its step (0 if there is none)."""
        found = completed_checkpoints(self.checkpoint_root)
        if not found:
            print(f"trainer.resume=true but no checkpoint in {self.checkpoint_root}: starting at step 0", flush=True)
            return 0
        state = json.loads((found[-1] / STATE_FILE).read_text())
        self.learners.load_checkpoint(str(found[-1] / "learner"))
        if self.critic is not None:
            self.critic.load_checkpoint(str(found[-1] / "critic"))
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self.version = state["policy_version"]
        self.source.update_weights(self.learners, self.version)
        print(f"resumed from {found[-1]} at step {state['step']}", flush=True)
        return state["step"]

    @staticmethod
    def _due(step: int, every: int) -> bool:
        return every > 0 and step % every == 0


def sample_summary(collected: Collected, shown: int = 4) -> dict:
    """What a step trained on: every group's prompt index in the data set, and a few samples to read."""
    batch = collected.batch
    return {
        "prompt_indices": collected.prompt_indices,
        "samples": [{"prompt": batch.prompts[i], "response": batch.responses[i], "answer": batch.answers[i],
                     "score": round(batch.scores[i].item(), 4)} for i in range(min(shown, len(batch)))],
    }


def completed_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders with a state file, oldest first."""
    return sorted(p.parent for p in root.glob(f"step_*/{STATE_FILE}"))
