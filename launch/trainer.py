"""The driver: moves batches between the role groups, step after step.

    for each step:
        prompts  <- the sampler (a pure function of the step: resumable)
        batch    <- rollout workers generate n samples per prompt
        scores   <- reward workers
        ref lp   <- reference worker
        adv      <- the algorithm
        update   <- FSDP learners
        weights  -> rollout workers, tagged with the new version

There is no per-algorithm branch here: the algorithm plug-in computes the
advantages and, inside the learners, the loss.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from actors.groups import LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup
from algorithms import get_algorithm_class
from algorithms.advantages import zero_variance_groups
from rlcore.batch import RolloutBatch
from rlcore.config import Config, to_yaml
from rlcore.data import PromptRow, PromptSampler
from rlcore.metrics import MetricsLogger

STATE_FILE = "trainer_state.json"


class Trainer:
    def __init__(self, cfg: Config, model_path: str, train_rows: list[PromptRow], eval_rows: list[PromptRow]):
        self.cfg = cfg
        self.out = Path(cfg.trainer.output_dir).expanduser().resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        self.algorithm = get_algorithm_class(cfg.algorithm.name)(cfg)
        self.sampler = PromptSampler(train_rows, cfg.data.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        self.eval_rows = eval_rows[: cfg.data.max_eval_prompts]
        # Learners first: their process group must form while the CPUs are still quiet.
        self.learners = LearnerGroup(cfg, model_path)
        self.reference = ReferenceGroup(cfg, model_path) if cfg.reference.enabled else None
        self.rewards = RewardGroup(cfg)
        self.rollout = RolloutGroup(cfg, model_path)
        self.version = 0
        self.logger = MetricsLogger(self.out, cfg.trainer.total_steps, cfg.trainer.tensorboard)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> Path | None:
        tc = self.cfg.trainer
        step = self.resume() if tc.resume else 0
        if step == 0 and self._due(0, tc.eval_every):
            self.logger.log(0, self.evaluate())
        for step in range(step + 1, tc.total_steps + 1):
            metrics, batch_summary = self.train_step(step)
            last = step == tc.total_steps
            if self._due(step, tc.eval_every) or (last and tc.eval_every):
                metrics.update(self.evaluate())
            self.logger.log(step, metrics)
            self.logger.log_samples(step, batch_summary)
            if self._due(step, tc.save_every) or last:
                self.save_checkpoint(step)
        self.logger.close()
        if tc.export:
            final = self.out / "final"
            self.learners.export(str(final))
            return final
        return None

    def train_step(self, step: int) -> tuple[dict[str, float], dict]:
        timings: dict[str, float] = {}
        with _timed(timings, "step"):
            with _timed(timings, "rollout"):
                batch, first_round, sampling, prompt_indices = self.collect(step, timings)
            if self.reference is not None:
                with _timed(timings, "reference"):
                    batch.ref_logprobs = self.reference.logprobs(batch)
            self.algorithm.compute_advantages(batch)
            with _timed(timings, "learner"):
                learner_metrics = self.learners.train_step(batch)
            with _timed(timings, "weight_sync"):
                self.version += 1
                self.rollout.update_weights(self.learners.state_dict_ref(), self.version)
        timings["rollout"] -= timings.get("reward", 0.0)  # collect() timed the reward calls on their own
        metrics = {**self.batch_metrics(first_round), **self.timing_metrics(timings, batch, learner_metrics),
                   **{f"actor/{k}": v for k, v in learner_metrics.items() if not k.startswith("learner_")},
                   **sampling, "policy_version": self.version}
        return metrics, sample_summary(prompt_indices, batch)

    def collect(self, step: int, timings: dict[str, float]) -> tuple[RolloutBatch, RolloutBatch, dict[str, float], list[int]]:
        """Generate and score until ``prompts_per_step`` groups pass the algorithm's filter.

        Returns the batch to train on, the first round as sampled (for honest
        reward and accuracy metrics), sampling statistics, and the data-set
        index of each trained group's prompt. Extra rounds draw
        extra prompts (``PromptSampler.batch(step, draw)``), so a resumed run
        repeats them.
        """
        per_step, cap = self.cfg.data.prompts_per_step, self.cfg.algorithm.max_sampling_rounds
        kept, dropped, first_round = [], [], None
        groups, prompt_of = 0, {}
        for draw in range(cap):
            prompts = self.sampler.batch(step, draw)
            first_group = ((step - 1) * cap + draw) * per_step  # unique across steps and draws
            prompt_of.update({first_group + i: p.index for i, p in enumerate(prompts)})
            batch = self.rollout.generate(prompts, list(range(first_group, first_group + per_step)), self.cfg.rollout.n)
            with _timed(timings, "reward", accumulate=True):
                self.rewards.score(batch)
            self.algorithm.shape_rewards(batch)
            first_round = first_round or batch
            keep, drop = self.algorithm.filter_groups(batch)
            kept.append(keep)
            dropped += [drop] if drop is not None else []
            groups += len(keep) // self.cfg.rollout.n
            if groups >= per_step:
                break
        short = max(0, per_step - groups)
        if short:  # out of rounds: top up with dropped groups (zero advantage, no policy gradient)
            kept.append(RolloutBatch.concat(dropped).select(range(short * self.cfg.rollout.n)))
        batch = RolloutBatch.concat(kept).select(range(per_step * self.cfg.rollout.n))
        stats = {"sampling/rounds": draw + 1, "sampling/dropped_groups": sum(len(d) for d in dropped) // self.cfg.rollout.n,
                 "sampling/filled_groups": short,
                 "sampling/zero_variance_groups": zero_variance_groups(batch.scores, batch.group_ids).sum().item()
                 // self.cfg.rollout.n}
        return batch, first_round, stats, [prompt_of[g] for g in dict.fromkeys(batch.group_ids.tolist())]

    # ---- metrics --------------------------------------------------------------------------
    def batch_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        lengths = batch.response_mask.sum(-1)
        metrics = {
            "reward/mean": batch.scores.mean().item(),
            "reward/std": batch.scores.std().item() if len(batch) > 1 else 0.0,
            "accuracy": self.accuracy(batch),
            "response_length/mean": lengths.mean().item(),
            "response_length/max": lengths.max().item(),
            "response_length/truncated_frac": batch.truncated.float().mean().item(),
        }
        metrics.update({f"reward/{name}": v.mean().item() for name, v in batch.reward_terms.items()})
        return metrics

    def accuracy(self, batch: RolloutBatch) -> float:
        return (batch.reward_terms[self.cfg.reward.accuracy_term] >= 1.0).float().mean().item()

    @staticmethod
    def timing_metrics(timings: dict[str, float], batch: RolloutBatch, learner: dict[str, float]) -> dict[str, float]:
        tokens = batch.num_response_tokens
        out = {f"time/{k}": v for k, v in timings.items()}
        out["throughput/rollout_tokens_per_s"] = tokens / max(timings["rollout"], 1e-9)
        out["throughput/learner_tokens_per_s"] = learner["learner_tokens"] / max(timings["learner"], 1e-9)
        out["throughput/tokens_per_s"] = tokens / max(timings["step"], 1e-9)
        return out

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy and reward on the eval prompts."""
        if not self.eval_rows:
            return {}
        start = time.perf_counter()
        batch = self.rollout.generate(self.eval_rows, list(range(len(self.eval_rows))), n=1, greedy=True)
        self.rewards.score(batch)
        return {"eval/accuracy": self.accuracy(batch), "eval/reward": batch.scores.mean().item(),
                "eval/response_length": batch.response_mask.sum(-1).mean().item(),
                "time/eval": time.perf_counter() - start}

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self, step: int) -> None:
        path = self.checkpoint_root / f"step_{step:06d}"
        if path.exists():
            shutil.rmtree(path)
        self.learners.save_checkpoint(str(path / "learner"))
        # Written last: a checkpoint without it is incomplete and ignored on resume.
        (path / STATE_FILE).write_text(json.dumps({"step": step, "policy_version": self.version}))
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
        self.version = state["policy_version"]
        self.rollout.update_weights(self.learners.state_dict_ref(), self.version)
        print(f"resumed from {found[-1]} at step {state['step']}", flush=True)
        return state["step"]

    @staticmethod
    def _due(step: int, every: int) -> bool:
        return every > 0 and step % every == 0


def sample_summary(prompt_indices: list[int], batch: RolloutBatch, shown: int = 4) -> dict:
    """What a step trained on: every prompt's data-set index, and a few samples to read."""
    return {
        "prompt_indices": prompt_indices,
        "samples": [{"prompt": batch.prompts[i], "response": batch.responses[i], "answer": batch.answers[i],
                     "score": round(batch.scores[i].item(), 4)} for i in range(min(shown, len(batch)))],
    }


def completed_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders with a state file, oldest first."""
    return sorted(p.parent for p in root.glob(f"step_*/{STATE_FILE}"))


@contextmanager
def _timed(timings: dict[str, float], name: str, accumulate: bool = False):
    start = time.perf_counter()
    yield
    timings[name] = (timings.get(name, 0.0) if accumulate else 0.0) + time.perf_counter() - start

