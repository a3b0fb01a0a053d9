"""What a lost rollout worker costs: the arithmetic job's work, clean and with a worker killed every N steps.

Runs ``launch.train`` twice on the same config (``launch/configs/grpo_arithmetic.yaml``,
the README's arithmetic job), back to back in this one run: once undisturbed,
once with ``kill -9`` of a vLLM rollout worker (chosen in turn) each time the
run has logged another ``--kill-every`` steps. The driver
replaces the worker (a new engine, the newest weights) and generates its share
again. Prints each run's seconds per step, the throughput ratio
(faulty / clean), the seconds each kill cost, and checks that every step was
trained once.

    .venv/bin/python bench/faults.py [--steps 30 --kill-every 5 --workers 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESET = "launch/configs/grpo_arithmetic.yaml"


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rollout_workers(session: int) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::RolloutWorker", "-s", str(session)], capture_output=True, text=True)
    return sorted(int(p) for p in found.stdout.split())


def run(out: Path, overrides: list[str], kill_every: int, steps: int) -> tuple[list[dict], int, float]:
    """One run of ``steps`` steps; kills a rollout worker every ``kill_every`` logged steps (0: never), but not in
    its last two. Its metrics, the kills, and the wall time from its first logged step to its end."""
    cmd = [sys.executable, "-m", "launch.train", "--config", PRESET, *overrides, f"trainer.output_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    kills, first_step_at, victim = 0, None, 0
    while proc.poll() is None:
        logged = len(read_metrics(out / "metrics.jsonl"))
        if logged and first_step_at is None:
            first_step_at = time.perf_counter()
        if kill_every and kill_every * (kills + 1) <= logged < steps - 1:
            pids = rollout_workers(proc.pid)
            if pids:
                os.kill(pids[victim % len(pids)], signal.SIGKILL)
                kills, victim = kills + 1, victim + 1
        time.sleep(0.2)
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}): {stderr[-2000:]}")
    return read_metrics(out / "metrics.jsonl"), kills, time.perf_counter() - (first_step_at or time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--kill-every", type=int, default=5, help="kill a rollout worker every N logged steps")
    parser.add_argument("--workers", type=int, default=2, help="rollout.num_workers")
    parser.add_argument("overrides", nargs="*", help="more config overrides for both runs")
    args = parser.parse_args()
    overrides = [f"trainer.total_steps={args.steps}", f"rollout.num_workers={args.workers}", "trainer.eval_every=0",
                 "trainer.save_every=0", "trainer.export=false", "trainer.loggers=[jsonl]", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        clean, _, clean_wall = run(Path(tmp) / "clean", overrides, 0, args.steps)
        faulty, kills, faulty_wall = run(Path(tmp) / "faulty", overrides, args.kill_every, args.steps)
    for name, metrics in (("clean", clean), ("faulty", faulty)):
        steps = [m["step"] for m in metrics]
        assert steps == list(range(1, args.steps + 1)), f"{name}: steps {steps}"
        assert [m["policy_version"] for m in metrics] == steps, f"{name}: a step trained twice or not at all"
    # Step 1 also waits for the engines' start-up; both runs are compared over the steps after it.
    clean_s = sum(m["time/step"] for m in clean[1:])
    faulty_s = sum(m["time/step"] for m in faulty[1:])
    restarts, regenerated = faulty[-1]["faults/rollout/restarts"], faulty[-1]["faults/rollout/regenerated"]
    print(f"preset {PRESET}, {args.steps} steps, rollout.num_workers={args.workers}, overrides {args.overrides}")
    print(f"clean:  {clean_s / (args.steps - 1):.2f} s/step over steps 2..{args.steps} (wall {clean_wall:.0f} s)")
    print(f"faulty: {faulty_s / (args.steps - 1):.2f} s/step over steps 2..{args.steps} (wall {faulty_wall:.0f} s); "
          f"{kills} kills, faults/rollout/restarts={restarts:.0f}, regenerated={regenerated:.0f} prompts")
    print(f"throughput ratio (faulty / clean): {clean_s / faulty_s:.2f}")
    print(f"cost per kill: {(faulty_s - clean_s) / max(kills, 1):.1f} s")


if __name__ == "__main__":
    main()
