#!/usr/bin/env bash
# Test-time scaling on the reasoning task, one command: learned verifiers trained from the policy's own samples,
# then every evaluation method.
#   1. Monte-Carlo step labels and outcome pairs from the policy   python -m launch.label_steps (tts_reasoning.yaml)
#   2. an outcome reward model on the pairs                        launch/configs/orm_reasoning.yaml
#   3. a process reward model on the step labels                   launch/configs/prm_reasoning.yaml
#   4. greedy, pass@k, maj@k, best-of-N (ORM), weighted best-of-N (ORM), beam search / DVTS / MCTS (PRM) and
#      budget forcing with s1's Waits                              python -m launch.evaluate (tts_reasoning.yaml)
#   5. budget forcing again, as a cap only (no Wait)
#   6. best-of-N, beam search and DVTS with the policy's own confidence as verifier (rewards/confidence.py, no
#      training); all drawn in OUT_DIR/test_time_scaling.png
# Usage: scripts/test_time_scaling.sh [POLICY] [OUT_DIR]   (defaults: outputs/r1/2-grpo/final, made by
# scripts/r1_recipe.sh, and outputs/tts). Extra overrides for every stage go in TTS_OVERRIDES.
set -euo pipefail
cd "$(dirname "$0")/.."
policy="${1:-outputs/r1/2-grpo/final}"
out="${2:-outputs/tts}"
py="${PYTHON:-.venv/bin/python}"
read -r -a extra <<< "${TTS_OVERRIDES:-}"
start=$SECONDS
say() { echo "=== $1 ($(( SECONDS - start ))s) ==="; }

say "label steps"
"$py" -m launch.label_steps --config launch/configs/tts_reasoning.yaml model.path="$policy" \
  trainer.output_dir="$out/data" "${extra[@]}"
say "train the ORM"
"$py" -m launch.train --config launch/configs/orm_reasoning.yaml model.path="$policy" trainer.output_dir="$out/orm" \
  data.train_files="[$out/data/pairs-train.jsonl]" data.eval_files="[$out/data/pairs-test.jsonl]" "${extra[@]}"
say "train the PRM"
"$py" -m launch.train --config launch/configs/prm_reasoning.yaml model.path="$policy" trainer.output_dir="$out/prm" \
  data.train_files="[$out/data/steps-train.jsonl]" data.eval_files="[$out/data/steps-test.jsonl]" "${extra[@]}"
say "evaluate"
"$py" -m launch.evaluate --config launch/configs/tts_reasoning.yaml model.path="$policy" \
  trainer.output_dir="$out/eval" eval.verifier.args.model="$out/orm/final" \
  eval.search_verifier.args.model="$out/prm/final" "${extra[@]}"
say "budget forcing as a cap only"
"$py" -m launch.evaluate --config launch/configs/tts_reasoning.yaml model.path="$policy" \
  trainer.output_dir="$out/eval-cap" 'eval.methods=[budget_forcing]' eval.min_budget_fraction=0 "${extra[@]}"
say "the policy's confidence as verifier"
confidence="{name: confidence, timeout_s: 600, args: {model: $policy}}"
"$py" -m launch.evaluate --config launch/configs/tts_reasoning.yaml model.path="$policy" \
  trainer.output_dir="$out/eval-confidence" 'eval.methods=[best_of_n,weighted_best_of_n,beam_search,dvts]' \
  eval.verifier="$confidence" eval.search_verifier="$confidence" "${extra[@]}"
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
from launch.evaluate import draw
out = Path(sys.argv[1])
runs = ("eval", "eval-cap", "eval-confidence")
rows = [row for run in runs for row in json.loads((out / run / "eval_results.json").read_text())["rows"]]
draw(rows, out / "test_time_scaling.png")  # every run's methods, each verifier its own line
PY
echo "test-time scaling done in $(( SECONDS - start ))s: $out/eval/eval_results.md, $out/test_time_scaling.png"
