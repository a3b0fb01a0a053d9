#!/usr/bin/env bash
# The DeepSeek-R1 recipe on the local reasoning task, one command, each stage starting from the previous stage's
# exported model:
#   1. cold-start SFT on worked solutions          launch/configs/reasoning_sft.yaml
#   2. GRPO with accuracy + format rewards         launch/configs/reasoning_grpo.yaml
#   3. rejection-sampling SFT on the policy's own correct samples (reasoning_sft.yaml, algorithm rejection_sft)
#   4. more GRPO                                   launch/configs/reasoning_grpo.yaml
#   5. evaluation of every stage's model on the held-out problems (python -m launch.evaluate, one launch)
# Usage: scripts/r1_recipe.sh [OUT_DIR]   (default outputs/r1). Step counts can be lowered for a smoke run with
# SFT_STEPS, GRPO_STEPS, RS_STEPS and GRPO2_STEPS; extra overrides for every stage go in R1_OVERRIDES, and for
# the rejection-sampling stage alone in RS_OVERRIDES.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/r1}"
py="${PYTHON:-.venv/bin/python}"
read -r -a extra <<< "${R1_OVERRIDES:-}"
read -r -a rs_extra <<< "${RS_OVERRIDES:-}"
start=$SECONDS

stage() {  # stage NAME PRESET OVERRIDES...
  local name="$1" preset="$2"; shift 2
  echo "=== stage $name ($(( SECONDS - start ))s) ==="
  "$py" -m launch.train --config "$preset" trainer.output_dir="$out/$name" "$@" "${extra[@]}"
}

stage 1-sft launch/configs/reasoning_sft.yaml trainer.total_steps="${SFT_STEPS:-1400}"
stage 2-grpo launch/configs/reasoning_grpo.yaml model.path="$out/1-sft/final" trainer.total_steps="${GRPO_STEPS:-60}"
stage 3-rs-sft launch/configs/reasoning_sft.yaml model.path="$out/2-grpo/final" algorithm.name=rejection_sft \
  data.train_files='[local://reasoning-train.jsonl]' data.eval_files='[local://reasoning-test.jsonl]' \
  data.answer_key=reward_model.ground_truth rollout.n=8 learner.lr=1.0e-4 learner.warmup_steps=0 \
  trainer.total_steps="${RS_STEPS:-20}" trainer.eval_every=0 "${rs_extra[@]}"
stage 4-grpo launch/configs/reasoning_grpo.yaml model.path="$out/3-rs-sft/final" \
  trainer.total_steps="${GRPO2_STEPS:-20}" trainer.eval_every=0

echo "=== evaluate every stage ($(( SECONDS - start ))s) ==="
# one launch: the rollout engines start once and load each stage's weights in turn (eval.models)
"$py" -m launch.evaluate --config launch/configs/reasoning_grpo.yaml trainer.output_dir="$out/eval" \
  "eval.models={'1-sft': '$out/1-sft/final', '2-grpo': '$out/2-grpo/final', '3-rs-sft': '$out/3-rs-sft/final', \
'4-grpo': '$out/4-grpo/final'}" "${extra[@]}"
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| stage | held-out accuracy | format | thinking tokens | response tokens |\n|---|---|---|---|---|")
for stage in ("1-sft", "2-grpo", "3-rs-sft", "4-grpo"):
    row = json.loads((out / "eval" / stage / "eval_results.json").read_text())["rows"][0]
    print(f"| {stage} | {row['accuracy']:.3f} | {row['r1_format']:.3f} | "
          f"{row.get('thinking_tokens', float('nan')):.1f} | {row['tokens_per_problem']:.1f} |")
PY
echo "recipe done in $(( SECONDS - start ))s"
