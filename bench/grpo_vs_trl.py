"""Our GRPO trainer against TRL's ``GRPOTrainer`` (TRL 1.16) on the same work, back to back.

Each system runs as its own process, one after the other, on the same
machine: ours is ``python -m launch.train`` (Ray, a vLLM rollout worker, the
learner and reference actors), TRL's is ``bench/_trl_run.py`` (one process,
transformers ``generate``). Both train on the built-in arithmetic prompts, 8
samples per prompt, temperature 1, lr 1e-4 constant, KL coefficient 0.001,
one pass over each step's samples, the same micro-batches (forward passes)
on both sides and a token-mean loss per micro-batch (TRL's
``loss_type="bnpo"``). Workloads:

* ``main``: the README's arithmetic job (grpo_arithmetic.yaml): the tiny local Qwen2 (2.4M parameters),
  64 prompts x 8 samples per step, up to 6 new tokens, mini-batch 256 (two
  optimizer steps per step), one forward pass per mini-batch.
* ``mid``: a 63M-parameter Qwen2 shape with random weights (built once under
  ``~/.cache/rlcore/bench-qwen2-63m``), 8 prompts x 8 samples, up to 64 new
  tokens, mini-batch 64 (one optimizer step per step, so TRL and our
  ``algorithm.old_logprobs=auto`` skip the old log-prob pass).

A step is one batch of samples and its training (for TRL: one generation
batch and its optimizer steps). For each system and workload it prints the
seconds per step (median, leaving out the first 2 steps of longer runs),
samples per second, the time to the first step (from launching the process
to the end of step 1), the sampled accuracy of the first and last 10 steps
(thirds under 30 steps), TRL's s/step over ours and the median phase times
(ours: rollout, reference, actor, weight sync; TRL: generate, score = rewards
+ reference and old log-probs, train); then a markdown table. Every number,
per step, goes to ``--out``; each run's log goes beside it.

    .venv/bin/python bench/grpo_vs_trl.py [--workloads main,mid --steps-main 100 --steps-mid 6]
        [--ours default= --ours pipelined=rollout.max_staleness=1,algorithm.old_logprobs=auto]
        [--threads 2 --trl-bf16 --seed 0 --quick --out outputs/bench/grpo_vs_trl.json]

``--ours NAME=KEY=VALUE,KEY=VALUE`` adds one of our variants (config
overrides, comma-separated, so a value cannot itself hold a comma); repeat it
to compare several. ``--threads`` sets TRL's torch threads; ours sets its own
per role (``learner.num_threads``, ``reference.num_threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = "~/.cache/rlcore"
MID_MODEL_DIR = "bench-qwen2-63m"
WARMUP_STEPS = 2
"""Steps left out of the steady-state median."""
TREND_STEPS = 10
"""Steps averaged at each end for the accuracy trend (thirds of the run when it is shorter than 3x this)."""
OUR_PHASES = ("time/rollout", "time/reference", "time/actor", "time/weight_sync")
TRL_PHASES = ("time/generate", "time/score", "time/train")


@dataclass(frozen=True)
class Workload:
    name: str
    prompts_per_step: int
    max_new_tokens: int
    mini_batch: int
    steps: int
    """Default step count."""
    micro_batch: int = 64
    """Samples per forward/backward pass (ours: learner and reference micro-batches; TRL: per-device batch)."""
    n: int = 8
    lr: float = 1e-4
    beta: float = 0.001

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.n


WORKLOADS = {
    # TRL's per_device_train_batch_size=256, as the issue measured it; ours runs the same passes.
    "main": Workload("main", prompts_per_step=64, max_new_tokens=6, mini_batch=256, steps=100, micro_batch=256),
    "mid": Workload("mid", prompts_per_step=8, max_new_tokens=64, mini_batch=64, steps=6),
}
QUICK_STEPS = {"main": 4, "mid": 2}


@dataclass
class Run:
    """One system's run of one workload: what it measured, per step."""

    system: str
    """``ours/<variant>`` or ``trl``."""
    workload: str
    steps: int
    samples_per_step: int
    step_s: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    """Per step, every ``time/*`` value the system reports."""
    first_step_s: float | None = None
    """Wall seconds from launching the process to the end of step 1."""
    wall_s: float = 0.0
    error: str | None = None
    raw: dict = field(default_factory=dict)
    """What the system logged: our metrics.jsonl records, or TRL's logs."""

    def steady(self) -> list[float]:
        """Step times after the first ``WARMUP_STEPS`` (all of them in a run no longer than that)."""
        return self.step_s[WARMUP_STEPS:] or self.step_s

    def s_per_step(self) -> float | None:
        return statistics.median(self.steady()) if self.step_s else None

    def samples_per_s(self) -> float | None:
        s = self.s_per_step()
        return self.samples_per_step / s if s else None

    def accuracy_trend(self) -> tuple[float, float] | None:
        """Mean sampled accuracy of the first and the last ``TREND_STEPS`` steps (thirds of shorter runs)."""
        acc = self.accuracy
        if not acc:
            return None
        k = TREND_STEPS if len(acc) >= 3 * TREND_STEPS else max(1, len(acc) // 3)
        return statistics.fmean(acc[:k]), statistics.fmean(acc[-k:])

    def phase_medians(self) -> dict[str, float]:
        """Steady-state median of every phase key."""
        rows = self.phases[WARMUP_STEPS:] or self.phases
        keys = sorted({k for row in rows for k in row})
        return {k: statistics.median(row[k] for row in rows if k in row) for k in keys}

    def summary(self) -> dict:
        trend = self.accuracy_trend()
        return {"s_per_step": self.s_per_step(), "samples_per_s": self.samples_per_s(),
                "first_step_s": self.first_step_s, "accuracy_first": trend and trend[0],
                "accuracy_last": trend and trend[1], "phase_medians": self.phase_medians()}


def model_path(workload: Workload) -> str:
    """The workload's model folder, built on first use."""
    from rlcore.assets import resolve

    if workload.name == "main":
        return resolve("local://tiny-qwen2-arith", CACHE_DIR, "model.path")
    from rlcore.local_model import LocalModelSpec, make_local_model

    spec = LocalModelSpec(hidden_size=768, num_layers=10, num_heads=12, num_kv_heads=4, intermediate_size=2048,
                          warmup_steps=0)
    return str(make_local_model(Path(CACHE_DIR).expanduser() / MID_MODEL_DIR, spec))  # reused when cached


def data_path() -> str:
    from rlcore.assets import resolve

    return resolve("local://arithmetic-train.jsonl", CACHE_DIR, "data.train_files")


def our_overrides(workload: Workload, model: str, steps: int, output_dir: str, seed: int = 0) -> list[str]:
    """Everything that defines the workload, set explicitly so a preset change cannot shift it."""
    return [f"trainer.seed={seed}",
        f"model.path={model}", f"data.prompts_per_step={workload.prompts_per_step}", f"rollout.n={workload.n}",
        f"rollout.max_new_tokens={workload.max_new_tokens}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        f"learner.mini_batch_size={workload.mini_batch}", f"learner.micro_batch_size={workload.micro_batch}",
        f"reference.micro_batch_size={workload.micro_batch}", f"learner.lr={workload.lr}", "learner.epochs=1",
        f"algorithm.kl_coef={workload.beta}", f"trainer.output_dir={output_dir}", f"trainer.total_steps={steps}",
        "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false", "trainer.loggers=[console,jsonl]",
    ]


def read_metrics(path: Path) -> list[dict]:
    """The complete lines of a metrics.jsonl (a line being written is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def run_ours(workload: Workload, variant: str, extra: list[str], steps: int, model: str, log: Path,
             seed: int = 0, repo: Path = REPO) -> Run:
    """Train with ``launch.train`` of the code in ``repo`` (another checkout: a baseline); step 1's end is when its
    metrics line appears."""
    run = Run(f"ours/{variant}", workload.name, steps, workload.samples_per_step)
    with tempfile.TemporaryDirectory(prefix="grpo-vs-trl-ours-") as out:
        cmd = [sys.executable, "-m", "launch.train", "--config", "launch/configs/grpo_arithmetic.yaml",
               *our_overrides(workload, model, steps, out, seed), *extra]
        metrics = Path(out) / "metrics.jsonl"
        with log.open("w") as log_file:
            start = time.time()
            proc = subprocess.Popen(cmd, cwd=repo, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                                    stdout=log_file, stderr=subprocess.STDOUT)
            while proc.poll() is None and run.first_step_s is None:
                if any(r.get("step") == 1 for r in read_metrics(metrics)):
                    run.first_step_s = time.time() - start
                time.sleep(0.05)
            rc = proc.wait()
            run.wall_s = time.time() - start
        records = [r for r in read_metrics(metrics) if r.get("step", 0) >= 1]
    if rc != 0:
        run.error = f"exit code {rc}"
    run.raw = {"command": cmd, "metrics": records}
    run.step_s = [r["time/step"] for r in records]
    run.accuracy = [r["accuracy"] for r in records if "accuracy" in r]
    run.phases = [{k: v for k, v in r.items() if k.startswith("time/")} for r in records]
    return run


def run_trl(workload: Workload, steps: int, model: str, threads: int, bf16: bool, log: Path, seed: int = 0) -> Run:
    """Train with TRL in ``bench/_trl_run.py``; its result file has the wall clock at each step's end."""
    run = Run("trl", workload.name, steps, workload.samples_per_step)
    with tempfile.TemporaryDirectory(prefix="grpo-vs-trl-trl-") as out:
        result_path = Path(out) / "result.json"
        cmd = [sys.executable, str(REPO / "bench" / "_trl_run.py"), "--model", model, "--data", data_path(),
               "--steps", str(steps), "--prompts-per-step", str(workload.prompts_per_step), "--n", str(workload.n),
               "--max-new-tokens", str(workload.max_new_tokens), "--mini-batch", str(workload.mini_batch),
               "--micro-batch", str(workload.micro_batch),
               "--lr", str(workload.lr), "--beta", str(workload.beta), "--threads", str(threads),
               "--seed", str(seed), "--result", str(result_path), *(["--bf16"] if bf16 else [])]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false"}
        with log.open("w") as log_file:
            start = time.time()
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                check=False).returncode
            run.wall_s = time.time() - start
        result = json.loads(result_path.read_text()) if result_path.exists() else None
    run.raw = {"command": cmd, **(result or {})}
    if rc != 0 or result is None:
        run.error = f"exit code {rc}"
        return run
    ends = result["step_ends"]
    run.first_step_s = ends[0] - start if ends else None
    run.step_s = [b - a for a, b in zip([result["train_begin"], *ends], ends)]
    run.accuracy = result["accuracy"]
    run.phases = [{**p, "time/step": s, "time/train": s - p["time/generate"] - p["time/score"]}
                  for p, s in zip(result["phases"], run.step_s)]
    return run


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(run: Run, trl: Run | None) -> float | None:
    """TRL's s/step over this run's: above 1, this run is faster."""
    ours, theirs = run.s_per_step(), trl and trl.s_per_step()
    return theirs / ours if ours and theirs else None


def report_line(run: Run, trl: Run | None) -> str:
    if run.error:
        return f"{run.workload:5} {run.system:20} FAILED ({run.error})"
    trend = run.accuracy_trend() or (None, None)
    phases = run.phase_medians()
    names = TRL_PHASES if run.system == "trl" else OUR_PHASES
    split = "  ".join(f"{k[5:]} {phases[k]:.3f}" for k in names if k in phases)
    speed = "" if run.system == "trl" else f"  ours/TRL x{fmt(ratio(run, trl), '.2f')}"
    return (f"{run.workload:5} {run.system:20} {fmt(run.s_per_step(), '.3f')} s/step  "
            f"{fmt(run.samples_per_s(), '.0f')} samples/s  first step {fmt(run.first_step_s, '.1f')} s  "
            f"acc {fmt(trend[0], '.3f')} -> {fmt(trend[1], '.3f')}{speed}\n{'':27}phases (s): {split}")


def table(runs: list[Run]) -> str:
    columns = ("workload", "system", "steps", "s/step", "samples/s", "first step (s)", "accuracy first -> last",
               "speed ours/TRL")
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    trl = {r.workload: r for r in runs if r.system == "trl"}
    for run in runs:
        if run.error:
            lines.append(f"| {run.workload} | {run.system} | {run.steps} | failed: {run.error} | | | | |")
            continue
        trend = run.accuracy_trend() or (None, None)
        speed = "1 (baseline)" if run.system == "trl" else f"x{fmt(ratio(run, trl.get(run.workload)), '.2f')}"
        lines.append(f"| {run.workload} | {run.system} | {run.steps} | {fmt(run.s_per_step(), '.3f')} | "
                     f"{fmt(run.samples_per_s(), '.0f')} | {fmt(run.first_step_s, '.1f')} | "
                     f"{fmt(trend[0], '.3f')} -> {fmt(trend[1], '.3f')} | {speed} |")
    return "\n".join(lines)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name=k1=v1,k2=v2`` -> (name, [k1=v1, k2=v2]); ``name=`` has no overrides."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--ours expects NAME=OVERRIDE,OVERRIDE..., got {text!r}")
    return name, [o for o in overrides.split(",") if o]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="main,mid", help="comma-separated: main, mid")
    parser.add_argument("--steps-main", type=int, default=WORKLOADS["main"].steps)
    parser.add_argument("--steps-mid", type=int, default=WORKLOADS["mid"].steps)
    parser.add_argument("--ours", type=parse_variant, action="append", metavar="NAME=OVERRIDES",
                        help="one of our variants (repeatable); default: default= (no overrides)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TRL's torch threads")
    parser.add_argument("--trl-bf16", action="store_true", help="TRL with bf16=True")
    parser.add_argument("--seed", type=int, default=0, help="both sides' seed (ours: trainer.seed)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: " + ", ".join(f"{w} {n} steps" for w, n in QUICK_STEPS.items()))
    parser.add_argument("--out", default="outputs/bench/grpo_vs_trl.json")
    args = parser.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    args.ours = args.ours or [("default", [])]
    return args


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    logs = out.parent / f"{out.stem}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        steps = QUICK_STEPS[name] if args.quick else getattr(args, f"steps_{name}")
        model = model_path(workload)
        print(f"== {name}: {steps} steps x {workload.samples_per_step} samples, model {model}, logs in {logs}/",
              flush=True)
        trl = run_trl(workload, steps, model, args.threads, args.trl_bf16, logs / f"{name}-trl.log", args.seed)
        print(report_line(trl, trl), flush=True)
        runs.append(trl)
        for variant, extra in args.ours:
            run = run_ours(workload, variant, extra, steps, model, logs / f"{name}-ours-{variant}.log", args.seed)
            print(report_line(run, trl), flush=True)
            runs.append(run)
    print("\n" + table(runs))
    report = {"args": vars(args), "cores": os.cpu_count(),
              "workloads": {n: asdict(WORKLOADS[n]) for n in args.workloads},
              "runs": [{**asdict(r), "summary": r.summary()} for r in runs]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nraw numbers: {out}")
    failed = [f"{r.workload} {r.system}" for r in runs if r.error]
    if failed:
        print("failed: " + ", ".join(failed) + f" (see {logs}/)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
