"""Draw a run's curves from its metrics: ``python -m launch.plot RUN_DIR [RUN_DIR ...] [--out FILE]``.

Reads ``RUN_DIR/metrics.jsonl`` (the ``jsonl`` logger's file) and writes one
PNG (default ``RUN_DIR/curves.png``, the first run's) with a panel per group
of metrics the runs logged: reward and its terms, accuracy, response length,
KL, entropy, losses and phase times. A panel whose metrics no run has is left
out; several run dirs overlay their curves, one colour per run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

METRICS_FILE = "metrics.jsonl"
REWARD_STATS = {"reward/mean", "reward/std"}
"""``reward/*`` keys that are statistics of the total, not a reward term."""
ACCURACY = ("accuracy", "eval/accuracy", "actor/reward_accuracy", "eval/preference_accuracy")
LENGTH = ("response_length/mean", "response_length/thinking_mean")
NOT_A_PHASE = {"time/step", "time/startup"}
"""``time/*`` keys outside the phase lines: the step total is drawn on its own; startup is once, and tall."""
STYLES = ("-", "--", ":", "-.")


class Panel(NamedTuple):
    title: str
    keys: tuple[str, ...]


def panels(keys: Iterable[str]) -> list[Panel]:
    """The panels to draw for a run that logged ``keys``, each with the keys it shows, in order; empty ones left out."""
    keys = set(keys)
    terms = sorted(k for k in keys if k.startswith("reward/") and k not in REWARD_STATS)
    phases = sorted(k for k in keys if k.startswith("time/") and k not in NOT_A_PHASE)
    wanted = [
        Panel("reward", tuple(k for k in ("reward/mean", *terms) if k in keys)),
        Panel("accuracy", tuple(k for k in ACCURACY if k in keys)),
        Panel("response length (tokens)", tuple(k for k in LENGTH if k in keys)),
        Panel("KL to the reference", tuple(k for k in ("actor/kl",) if k in keys)),
        Panel("entropy", tuple(k for k in ("actor/entropy",) if k in keys)),
        Panel("loss", tuple(sorted(k for k in keys if "loss" in k))),
        Panel("time per step (s)", tuple(phases + [k for k in ("time/step",) if k in keys])),
    ]
    return [panel for panel in wanted if panel.keys]


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """``{step: {key: value}}`` from a metrics.jsonl; a step logged twice (a resumed run) keeps the later values.

    A line that does not parse (the one a live run is writing) is skipped.
    """
    steps: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            steps.setdefault(int(record.pop("step")), {}).update(record)
    return dict(sorted(steps.items()))


def draw(runs: dict[str, dict[int, dict[str, float]]], out: Path) -> None:
    """One figure, a panel per ``panels`` entry, each run's series over the steps it was logged at."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = panels({key for steps in runs.values() for row in steps.values() for key in row})
    cols = 2 if len(chosen) > 1 else 1
    rows = -(-len(chosen) // cols)
    fig = Figure(figsize=(6.5 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, i + 1)
        for r, (run, steps) in enumerate(runs.items()):
            for k, key in enumerate(panel.keys):
                xs = [step for step, row in steps.items() if key in row]
                if not xs:
                    continue
                ys = [steps[step][key] for step in xs]
                sparse = len(xs) < len(steps) / 2  # eval metrics: only on eval steps
                label = key if len(runs) == 1 else run if len(panel.keys) == 1 else f"{run} {key}"
                style = {"color": f"C{r}", "linestyle": STYLES[k % len(STYLES)]} if len(runs) > 1 else {}
                if key == "time/step":  # the total, over the phases
                    style = {"color": "black", "linewidth": 2, **style}
                ax.plot(xs, ys, label=label, marker="o" if sparse else None, markersize=4, **style)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(panel.keys) * len(runs) > 6:  # beside the panel, not over the curves
            ax.legend(fontsize="x-small", ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        else:
            ax.legend(fontsize="small")
    fig.suptitle(", ".join(runs))
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a trainer.output_dir")
    parser.add_argument("--out", type=Path, help="the PNG to write (default: FIRST_RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for run_dir in args.run_dirs:
        path = run_dir / METRICS_FILE
        steps = read_metrics(path) if path.is_file() else {}
        if not steps:
            problem = "no metrics in it" if path.is_file() else "no such file"
            print(f"plot error: {path}: {problem} (was the run's trainer.loggers without jsonl?)", file=sys.stderr)
            return 2
        name = run_dir.resolve().name
        runs[str(run_dir) if name in runs else name] = steps  # the legend names runs by their dir
    if importlib.util.find_spec("matplotlib") is None:
        print("plot error: matplotlib is not installed: pip install 'rlcore[logging]'", file=sys.stderr)
        return 2
    out = args.out or args.run_dirs[0] / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(runs, out)
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
