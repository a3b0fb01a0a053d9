"""Per-step metrics: one printed line with a progress bar, a JSONL file, TensorBoard.

The JSONL file (``output_dir/metrics.jsonl``) gets one object per step, with
flat keys like ``reward/mean`` and ``time/rollout``; ``rollouts.jsonl`` gets
the prompt indices of each step and a few samples to read. Both are appended
to, so a resumed run continues the same files.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# What the one-line summary shows, in order: (metric key, label, format).
SUMMARY = (
    ("reward/mean", "reward", "{:.3f}"),
    ("accuracy", "acc", "{:.3f}"),
    ("eval/accuracy", "eval_acc", "{:.3f}"),
    ("actor/reward_accuracy", "pref_acc", "{:.3f}"),
    ("eval/preference_accuracy", "eval_pref_acc", "{:.3f}"),
    ("critic/value_loss", "vloss", "{:.4f}"),
    ("response_length/mean", "len", "{:.1f}"),
    ("actor/kl", "kl", "{:.4f}"),
    ("actor/entropy", "ent", "{:.3f}"),
    ("actor/grad_norm", "gnorm", "{:.3f}"),
    ("time/step", "step_s", "{:.1f}"),
    ("throughput/rollout_tokens_per_s", "gen_tok/s", "{:.0f}"),
)


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class MetricsLogger:
    def __init__(self, output_dir: str | Path, total_steps: int, tensorboard: bool = True, stream=sys.stdout):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.total, self.stream = total_steps, stream
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:
                pass  # TensorBoard is optional: `pip install 'rlcore[logging]'`

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: round(float(v), 6) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self.stream.write(self.format_line(step, metrics) + "\n")
        self.stream.flush()

    def log_samples(self, step: int, summary: dict) -> None:
        """Append what the step trained on to ``rollouts.jsonl`` (prompt indices and a few samples)."""
        with (self.dir / "rollouts.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **summary}) + "\n")

    def format_line(self, step: int, metrics: dict[str, float]) -> str:
        if self.first_step is None:
            self.first_step = step
        elapsed = time.perf_counter() - self.started
        done = step - self.first_step + 1
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        fields = [label + " " + fmt.format(metrics[key]) for key, label, fmt in SUMMARY if key in metrics]
        return f"step {progress_bar(step, self.total)} " + " | ".join(fields) + f" | eta {_duration(eta)}"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
