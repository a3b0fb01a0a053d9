"""Evaluate a model: ``python -m launch.evaluate --config <preset> [key=value ...]``.

It runs the preset's rollout and reward workers on ``data.eval_files`` (prompt
rows) with ``model.path`` (a policy or an export), greedy decoding, and writes
``eval_results.json`` and ``eval_results.md`` to ``trainer.output_dir``:
accuracy (the share of responses whose ``reward.accuracy_term`` is 1), the mean
reward, the mean response length and, where responses think in
``<think>…</think>``, the mean thinking length, in tokens; then the mean of every
reward term and logged part (``r1_format``, ``l1/abs_deviation``). Like
``launch.train``, it starts a private local Ray unless it runs in a cluster,
and a bad config or input exits with code 2 and one line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from launch.build import Plan
from launch.sources import RolloutSource, Roles
from launch.train import init_ray, parse_args, plan_and_data
from rlcore.config import ConfigError

RESULTS = "eval_results.json"


def markdown_table(rows: list[dict]) -> str:
    """The result rows as a Markdown table, one column per key of the first row."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                                         for k in keys) + " |")
    return "\n".join(lines)


def for_evaluation(plan: Plan) -> None:
    """Evaluation reads the eval files' prompt rows and generates, whatever the preset trains."""
    if not plan.cfg.data.eval_files:
        raise ConfigError("data.eval_files is empty: nothing to evaluate")
    plan.source = RolloutSource
    plan.cfg.data.train_files = list(plan.cfg.data.eval_files)


def main(argv: list[str] | None = None) -> int:
    built = plan_and_data(parse_args(argv), for_evaluation)
    if built is None:
        return 2
    plan, data = built
    cfg = plan.cfg
    started = init_ray(cfg)
    import ray

    from actors.groups import wait_ready

    try:
        source = RolloutSource(cfg, plan.algorithm, Roles(plan.reward_terms, {}, None), data.eval, data.eval)
        wait_ready([source])
        print(f"evaluating {cfg.model.path} on {min(len(data.eval), cfg.data.max_eval_prompts)} prompts", flush=True)
        start = time.perf_counter()
        metrics = source.evaluate()
        elapsed = time.perf_counter() - start
    finally:
        if started:
            ray.shutdown()
    row = {"method": "greedy", "n": 1, "accuracy": metrics["eval/accuracy"],
           "tokens_per_problem": metrics["eval/response_length"], "reward": metrics["eval/reward"]}
    if "eval/thinking_length" in metrics:
        row["thinking_tokens"] = metrics["eval/thinking_length"]
    row.update({key.removeprefix("eval/reward/"): v for key, v in metrics.items() if key.startswith("eval/reward/")})
    out = Path(cfg.trainer.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": cfg.model.path, "eval_files": cfg.data.eval_files, "seconds": round(elapsed, 2), "rows": [row]}
    (out / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table([row])
    (out / "eval_results.md").write_text(table + "\n")
    print(table)
    print(f"results written to {out / RESULTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
