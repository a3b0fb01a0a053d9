"""Start-up cost: short runs from launch to exit, ours against TRL's ``GRPOTrainer`` and against a baseline checkout,
alternating, in one run (issue 26).

Two rows, each run ``--repeats`` times (rounds alternate the systems, so a
noisy minute hits all of them):

* ``one-step``: the README job's small shape (16 prompts x 4 samples, mini-batch
  32, ``trainer.total_steps=1``, checkpoint and export included), as in
  BENCHMARKS "Fixed cost per run". Ours only.
* ``batch``: one generation batch of the arithmetic job (``grpo_vs_trl``'s
  ``main`` workload: 64 prompts x 8 samples, two optimizer steps), ours and
  TRL's, each in a fresh process.

``--baseline DIR`` runs our rows also with the code in DIR (a checkout of an
earlier commit: ``git worktree add /tmp/before <rev>``), with this
checkout's Python environment. ``--no-trl`` leaves TRL out (it needs the
bench extra: ``pip install -e ".[bench]"``).

    .venv/bin/python bench/startup.py [--repeats 3] [--baseline /tmp/before] [--no-trl]
        [--out outputs/bench/startup.json]

It prints each run's seconds as they finish, then a table: the median (and
range) per system, and the ratios ours/TRL and ours/baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_vs_trl import REPO, WORKLOADS, Run, model_path, run_ours, run_trl  # noqa: E402

BATCH = replace(WORKLOADS["main"], name="batch", steps=1)
"""One generation batch of the arithmetic job, and its two optimizer steps."""
ONE_STEP = replace(BATCH, name="one-step", prompts_per_step=16, n=4, mini_batch=32)
"""The README job's small shape, one step."""
ROWS = {"one-step": (ONE_STEP, ["trainer.export=true"]), "batch": (BATCH, [])}
"""Each row's workload and our extra overrides (the one-step run exports its model, as the README job does)."""


def systems(args: argparse.Namespace) -> list[tuple[str, str, Path | None]]:
    """(row, system, checkout) per measurement of a round; checkout None is TRL."""
    ours = [("now", REPO)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    out = [(row, name, repo) for row in ROWS for name, repo in ours]
    return out + ([] if args.no_trl else [("batch", "trl", None)])


def measure(row: str, system: str, repo: Path | None, model: str, log: Path) -> Run:
    if repo is None:
        return run_trl(BATCH, 1, model, os.cpu_count() or 1, False, log)
    workload, extra = ROWS[row]
    return run_ours(workload, system, extra, 1, model, log, repo=repo)


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} ({min(times):.1f}-{max(times):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each system per row")
    parser.add_argument("--baseline", default=None, help="a checkout of earlier code to run side by side")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out")
    parser.add_argument("--out", default="outputs/bench/startup.json")
    args = parser.parse_args()
    out = Path(args.out)
    logs = out.parent / f"{out.stem}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    model = model_path(WORKLOADS["main"])
    walls: dict[tuple[str, str], list[float]] = {}
    failed = []
    for round_ in range(args.repeats):
        for row, system, repo in systems(args):
            run = measure(row, system, repo, model, logs / f"{row}-{system}-{round_}.log")
            if run.error:
                failed.append(f"{row} {system} round {round_}: {run.error}")
                print(f"{row:8} {system:8} FAILED ({run.error}; log in {logs}/)", flush=True)
                continue
            walls.setdefault((row, system), []).append(run.wall_s)
            print(f"{row:8} {system:8} launch to exit {run.wall_s:.1f} s", flush=True)
    lines = ["| run | system | launch to exit, s: median (range) | over TRL | over baseline |", "|---|---|---|---|---|"]
    for (row, system), times in walls.items():
        trl = walls.get((row, "trl"))
        base = walls.get((row, "baseline"))
        over_trl = f"x{statistics.median(times) / statistics.median(trl):.2f}" if trl and system != "trl" else ""
        over_base = (f"x{statistics.median(times) / statistics.median(base):.2f}"
                     if base and system == "now" else "")
        lines.append(f"| {row} | {system} | {summary(times)} | {over_trl} | {over_base} |")
    print("\n" + "\n".join(lines))
    out.write_text(json.dumps({"args": vars(args), "walls": {f"{r}/{s}": t for (r, s), t in walls.items()},
                               "failed": failed}, indent=1))
    print(f"\nraw numbers: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
