"""Per-step metrics, fanned out to the loggers named in ``trainer.loggers``.

One class per destination, each with ``log(step, metrics)`` and ``close()``:

- ``console``: one printed line per step with a progress bar (``ConsoleSink``);
- ``jsonl``: ``output_dir/metrics.jsonl``, one object per step with flat keys
  like ``reward/mean`` and ``time/rollout`` (``JsonlSink``);
- ``tensorboard``: event files under ``output_dir/tensorboard`` (``TensorBoardSink``);
- ``wandb``: a Weights & Biases run under ``output_dir/wandb``, offline unless
  ``WANDB_MODE`` says otherwise (``WandbSink``).

``rollouts.jsonl`` gets the prompt indices of each step and a few samples to
read, whatever the loggers. The files are appended to, and the W&B run id is
kept in the output dir, so a resumed run continues the same files and run.
``python -m launch.plot output_dir`` draws the curves from ``metrics.jsonl``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from rlcore.config import ConfigError

LOGGERS = ("console", "jsonl", "tensorboard", "wandb")
"""The names ``trainer.loggers`` accepts."""

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


class Sink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """One line per step: the progress bar, the ``SUMMARY`` metrics present, and the time left."""

    def __init__(self, total_steps: int, stream=sys.stdout):
        self.total, self.stream = total_steps, stream
        self.started = time.perf_counter()
        self.first_step: int | None = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.stream.write(self.format_line(step, metrics) + "\n")
        self.stream.flush()

    def format_line(self, step: int, metrics: dict[str, float]) -> str:
        if self.first_step is None:
            self.first_step = step
        elapsed = time.perf_counter() - self.started
        done = step - self.first_step + 1
        eta = elapsed / done * (self.total - step) if done > 0 else 0.0
        fields = [label + " " + fmt.format(metrics[key]) for key, label, fmt in SUMMARY if key in metrics]
        return f"step {progress_bar(step, self.total)} " + " | ".join(fields) + f" | eta {_duration(eta)}"

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends ``{"step": N, key: value, ...}`` per step to ``output_dir/metrics.jsonl``."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / "metrics.jsonl"

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: round(float(v), 6) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        pass


class TensorBoardSink:
    """Scalars under ``output_dir/tensorboard``, flushed every step."""

    def __init__(self, output_dir: Path):
        # ImportError without the tensorboard package (MetricsLogger skips this logger then).
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run under ``output_dir/wandb``. ``WANDB_MODE`` (default offline: no account needed, ``wandb sync``
    uploads later), ``WANDB_PROJECT`` (default rlcore) and ``WANDB_NAME`` (default the output dir's name) choose
    where it goes. The run id is kept in ``output_dir/wandb/run_id``, so a resumed run logs to the same run (an online
    run ignores the steps a resume repeats, those after its checkpoint: W&B's steps only increase)."""

    MODE, PROJECT = "offline", "rlcore"

    def __init__(self, output_dir: Path, config: dict[str, Any] | None):
        import wandb

        id_file = output_dir / "wandb" / "run_id"
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:8]  # W&B ids: letters and digits
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
        self.run = wandb.init(dir=str(output_dir), config=config, id=run_id, resume="allow",
                              mode=os.environ.get("WANDB_MODE", self.MODE),
                              project=os.environ.get("WANDB_PROJECT", self.PROJECT),
                              name=os.environ.get("WANDB_NAME", output_dir.name))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def keep_through(path: Path, step: int) -> None:
    """Keep the records of the JSON-lines file ``path`` up to ``step``; a line cut short by a killed run goes too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    scratch = path.with_name(f".{path.name}.rewind")
    scratch.write_text("".join(kept))
    os.replace(scratch, path)


class MetricsLogger:
    """Sends each step's metrics to every logger named in ``loggers`` (see ``LOGGERS``)."""

    def __init__(self, output_dir: str | Path, total_steps: int, loggers: list[str] | tuple[str, ...],
                 config: dict[str, Any] | None = None, stream=sys.stdout):
        """``loggers``: ``trainer.loggers``; ``config``: the run's config as a plain dict, recorded by wandb."""
        self.check(loggers)
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sinks: list[Sink] = []
        for name in dict.fromkeys(loggers):  # each once, in the order given
            if name == "console":
                self.sinks.append(ConsoleSink(total_steps, stream))
            elif name == "jsonl":
                self.sinks.append(JsonlSink(self.dir))
            elif name == "tensorboard":
                try:
                    self.sinks.append(TensorBoardSink(self.dir))
                except ImportError:
                    print("note: trainer.loggers has tensorboard but the tensorboard package is not installed; "
                          "skipping it (pip install 'rlcore[logging]')", file=sys.stderr, flush=True)
            elif name == "wandb":
                self.sinks.append(WandbSink(self.dir, config))

    @staticmethod
    def check(loggers: list[str] | tuple[str, ...]) -> None:
        """Raise ConfigError for a name not in ``LOGGERS``, or wandb asked for but not installed."""
        unknown = [name for name in loggers if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"trainer.loggers: {', '.join(map(repr, unknown))} is not one of {', '.join(LOGGERS)}")
        if "wandb" in loggers and importlib.util.find_spec("wandb") is None:
            raise ConfigError("trainer.loggers has wandb but the wandb package is not installed: "
                              "pip install 'rlcore[logging]', or drop wandb from trainer.loggers")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def rewind(self, step: int) -> None:
        """A resumed run: drop what ``metrics.jsonl`` and ``rollouts.jsonl`` hold after ``step`` (the run redoes
        those steps), so that every step is recorded once. TensorBoard and wandb keep both records."""
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            keep_through(self.dir / name, step)

    def log_samples(self, step: int, summary: dict) -> None:
        """Append what the step trained on to ``rollouts.jsonl`` (prompt indices and a few samples)."""
        with (self.dir / "rollouts.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **summary}) + "\n")

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
