#!/usr/bin/env bash
# Token-level distillation against the alternatives, one command: the same student (local://tiny-qwen2-reason-small,
# half the reasoning model's layers, random weights), the same problems, the same step count, learning rate and
# batch shape, taught four ways by the GRPO-trained reasoning model (the main job's export):
#   1. sft         plain SFT on the data's own solutions        reasoning_sft.yaml with the small student
#   2. distill_sft the teacher's samples (one per prompt, at temperature 1) as SFT examples (sequence-level KD)
#   3. kd          the teacher's top-32 at every position of the data's solutions, forward KL  kd_reasoning.yaml
#   4. gkd         kd with half the steps on the student's own samples           kd_reasoning_on_policy.yaml
# then a greedy evaluation of the four students and the teacher on the 200 held-out problems and a Markdown table.
# Usage: scripts/kd_compare.sh [OUT_DIR]   (default outputs/kd). TEACHER (default outputs/reasoning-grpo/final),
# STEPS (default 1000) and KD_OVERRIDES (for every stage) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/kd}"
py="${PYTHON:-.venv/bin/python}"
teacher="${TEACHER:-outputs/reasoning-grpo/final}"
steps="${STEPS:-1000}"
read -r -a extra <<< "${KD_OVERRIDES:-}"
start=$SECONDS
student=local://tiny-qwen2-reason-small
common=(trainer.total_steps="$steps" trainer.eval_every=0 trainer.save_every="$steps")

stage() {  # stage NAME PRESET OVERRIDES...: skipped when OUT_DIR/NAME already holds its export
  local name="$1" preset="$2"; shift 2
  if [ -f "$out/$name/final/config.json" ]; then echo "=== stage $name: exported already, kept ==="; return; fi
  echo "=== stage $name ($(( SECONDS - start ))s) ==="
  "$py" -m launch.train --config "$preset" trainer.output_dir="$out/$name" "${common[@]}" "$@" "${extra[@]}"
}

stage sft launch/configs/reasoning_sft.yaml model.path="$student"
stage distill_sft launch/configs/reasoning_sft.yaml model.path="$student" algorithm.name=distill_sft \
  algorithm.teacher_path="$teacher" rollout.n=1 data.train_files='[local://reasoning-train.jsonl]' \
  data.eval_files='[local://reasoning-test.jsonl]' data.answer_key=reward_model.ground_truth
stage kd launch/configs/kd_reasoning.yaml algorithm.teacher_path="$teacher"
stage gkd launch/configs/kd_reasoning_on_policy.yaml algorithm.teacher_path="$teacher"

for model in sft distill_sft kd gkd teacher; do
  path="$out/$model/final"; [ "$model" = teacher ] && path="$teacher"
  echo "=== evaluate $model ($(( SECONDS - start ))s) ==="
  "$py" -m launch.evaluate --config launch/configs/reasoning_grpo.yaml model.path="$path" \
    trainer.output_dir="$out/eval/$model" "${extra[@]}"
done
"$py" - "$out" "$steps" <<'PY'
import json, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), sys.argv[2]
print(f"| student ({steps} steps) | held-out accuracy | format | response tokens |\n|---|---|---|---|")
for model in ("sft", "distill_sft", "kd", "gkd", "teacher"):
    row = json.loads((out / "eval" / model / "eval_results.json").read_text())["rows"][0]
    print(f"| {model} | {row['accuracy']:.3f} | {row['r1_format']:.3f} | {row['tokens_per_problem']:.1f} |")
PY
echo "comparison done in $(( SECONDS - start ))s"
