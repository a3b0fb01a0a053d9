#!/usr/bin/env bash
# The agent recipe on the multiplication task (rlcore.tasks.multiply), one command, GRPO starting from the SFT export:
#   1. cold-start SFT on tool-use traces                 launch/configs/agent_sft.yaml
#   2. GRPO on multi-turn episodes with the multiply tool launch/configs/agent_grpo.yaml
#   3. greedy evaluation of both exports on the held-out problems (python -m launch.evaluate)
#   4. the GRPO model with a calculator that always fails (ErrorMultiplyEnv): without the tool it cannot answer
#   5. the GRPO model with a calculator that adds one (OffByOneMultiplyEnv): does it repeat what the tool says?
# then a Markdown table of the five evaluations. Every evaluation scores exact_match (accuracy) and, with weight 0,
# rlcore.tasks.multiply:follows_tool (the final answer is the last tool answer) and rlcore.tasks.multiply:tool_use
# (the share of episodes that called the tool, and that called it without an error).
# Usage: scripts/agent_recipe.sh [OUT_DIR]   (default outputs/agent). Step counts can be lowered for a smoke run with
# SFT_STEPS and GRPO_STEPS; extra overrides for every stage go in AGENT_OVERRIDES (e.g. trainer.overwrite=true).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/agent}"
py="${PYTHON:-.venv/bin/python}"
read -r -a extra <<< "${AGENT_OVERRIDES:-}"
start=$SECONDS
task=rlcore.tasks.multiply
terms="[{name: exact_match}, {name: '$task:follows_tool', weight: 0}, {name: '$task:tool_use', weight: 0}]"

stage() {  # stage NAME PRESET [STEPS]: the preset's step count unless STEPS is given
  local name="$1" preset="$2" steps="${3:-}"
  echo "=== stage $name ($(( SECONDS - start ))s) ==="
  "$py" -m launch.train --config "$preset" trainer.output_dir="$out/$name" ${steps:+trainer.total_steps=$steps} \
    "${@:4}" "${extra[@]}"
}

evaluate() {  # evaluate NAME MODEL OVERRIDES...: greedy episodes on all 200 held-out problems
  local name="$1" model="$2"; shift 2
  echo "=== evaluate $name ($(( SECONDS - start ))s) ==="
  "$py" -m launch.evaluate --config launch/configs/agent_grpo.yaml model.path="$out/$model/final" \
    trainer.output_dir="$out/eval/$name" data.max_eval_prompts=200 reward.terms="$terms" "$@" "${extra[@]}"
}

stage 1-sft launch/configs/agent_sft.yaml "${SFT_STEPS:-}"
stage 2-grpo launch/configs/agent_grpo.yaml "${GRPO_STEPS:-}" model.path="$out/1-sft/final"
evaluate 1-sft 1-sft
evaluate 2-grpo 2-grpo
evaluate 2-grpo-error-tool 2-grpo env.tools=[] env.path=$task:ErrorMultiplyEnv
evaluate 2-grpo-off-by-one-tool 2-grpo env.tools=[] env.path=$task:OffByOneMultiplyEnv

"$py" - "$out" "$task" <<'PY'
import json, sys
from pathlib import Path
out, task = Path(sys.argv[1]), sys.argv[2]
print("| model | tool | held-out accuracy | tool-call rate | valid-call rate | follows the tool |\n|---|---|---|---|---|---|")
for name, model, tool in (("1-sft", "1-sft", "multiply"), ("2-grpo", "2-grpo", "multiply"),
                          ("2-grpo-error-tool", "2-grpo", "ErrorMultiplyEnv"),
                          ("2-grpo-off-by-one-tool", "2-grpo", "OffByOneMultiplyEnv")):
    row = json.loads((out / "eval" / name / "eval_results.json").read_text())["rows"][0]
    print(f"| {model} | {tool} | {row['accuracy']:.3f} | {row[f'{task}:tool_use/called']:.3f} | "
          f"{row[f'{task}:tool_use/valid']:.3f} | {row[f'{task}:follows_tool']:.3f} |")
steps = [json.loads(line) for line in (out / "2-grpo" / "metrics.jsonl").read_text().splitlines()]
steps = [m for m in steps if "env/tool_call_frac" in m]  # training steps (evaluations log apart)
first, last = steps[0], steps[-1]
print(f"GRPO training, step {first['step']} -> {last['step']}: tool-call rate {first['env/tool_call_frac']:.2f} -> "
      f"{last['env/tool_call_frac']:.2f}, valid-call rate {first['env/valid_call_frac']:.2f} -> "
      f"{last['env/valid_call_frac']:.2f}, sampled accuracy {first['accuracy']:.2f} -> {last['accuracy']:.2f}")
PY
echo "recipe done in $(( SECONDS - start ))s"
