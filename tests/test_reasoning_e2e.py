"""End to end on the reasoning chat model: verl-style chat data, and the R1 recipe's stages chained (reduced size)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import read_jsonl, venv_env
from tests.zygote import python

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]  # its runs join the session's Ray cluster

REPO = Path(__file__).resolve().parents[1]


def test_grpo_trains_from_a_verl_parquet_of_message_lists(tmp_path, cache_dir):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from rlcore.assets import resolve

    rows = read_jsonl(Path(resolve("local://reasoning-train.jsonl", cache_dir, "data.train_files")))[:64]
    # verl's format: prompt as chat messages, the answer nested under reward_model, extra fields alongside
    table = [{"data_source": "addition", "prompt": r["prompt"],
              "reward_model": {"style": "rule", "ground_truth": r["reward_model"]["ground_truth"]},
              "extra_info": {"index": i}} for i, r in enumerate(rows)]
    assert isinstance(table[0]["prompt"], list) and table[0]["prompt"][0]["role"] == "user"
    data = tmp_path / "train.parquet"
    pq.write_table(pyarrow.Table.from_pylist(table), data)
    out = tmp_path / "run"
    proc = subprocess.run(
        [python(), "-m", "launch.train", "--config", "launch/configs/reasoning_grpo.yaml",
         "model.path=local://tiny-qwen2-reason", f"data.train_files=[{data}]", f"data.eval_files=[{data}]",
         "data.max_eval_prompts=8", "data.prompts_per_step=8", "rollout.n=4", "rollout.max_new_tokens=16",
         "learner.mini_batch_size=32", "learner.micro_batch_size=32", "trainer.total_steps=2",
         "trainer.eval_every=2", f"trainer.output_dir={out}", "trainer.export=false"],
        cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert {"reward/answer_match", "reward/r1_format", "actor/pg_loss"} <= set(metrics[1])
    sample = read_jsonl(out / "rollouts.jsonl")[0]["samples"][0]
    # the chat template was applied to the message list, with its generation prompt
    assert sample["prompt"].startswith("<|im_start|>user\nWhat is ")
    assert sample["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert sample["answer"] in {r["reward_model"]["ground_truth"] for r in rows}  # read through the dotted key


def test_r1_recipe_stages_run_and_chain(tmp_path):
    out = tmp_path / "r1"
    env = {**venv_env(), "PYTHON": python(), "SFT_STEPS": "20", "GRPO_STEPS": "2", "RS_STEPS": "2",
           "GRPO2_STEPS": "2",
           "R1_OVERRIDES": "data.max_eval_prompts=8 rollout.max_new_tokens=64 trainer.eval_every=0",
           "RS_OVERRIDES": "algorithm.min_score=0"}  # a 20-step SFT model is rarely right: keep what ends
    proc = subprocess.run(["bash", "scripts/r1_recipe.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stages = ["1-sft", "2-grpo", "3-rs-sft", "4-grpo"]
    for stage in stages:
        assert (out / stage / "final" / "config.json").is_file(), stage
        assert (out / "eval" / stage / "eval_results.json").is_file(), stage
    # each stage started from the previous stage's export
    for before, after in zip(stages, stages[1:]):
        config = (out / after / "config.yaml").read_text()
        assert f"path: {out / before / 'final'}" in config, (after, before)
    sft_loss = [m["actor/sft_loss"] for m in read_jsonl(out / "1-sft" / "metrics.jsonl") if "actor/sft_loss" in m]
    assert sum(sft_loss[-5:]) < sum(sft_loss[:5])  # the cold start learnt something
    result = json.loads((out / "eval" / "4-grpo" / "eval_results.json").read_text())
    assert result["rows"][0]["method"] == "greedy" and 0.0 <= result["rows"][0]["accuracy"] <= 1.0
    assert "| 4-grpo |" in proc.stdout


def test_l1_reasoning_preset_counts_thinking_tokens_against_the_asked_length(tmp_path):
    out = tmp_path / "l1"
    proc = subprocess.run(
        [python(), "-m", "launch.train", "--config", "launch/configs/l1_reasoning.yaml",
         "model.path=local://tiny-qwen2-reason", "data.max_eval_prompts=8", "data.prompts_per_step=8", "rollout.n=4",
         "rollout.max_new_tokens=16", "learner.mini_batch_size=32", "learner.micro_batch_size=32",
         "trainer.total_steps=2", "trainer.eval_every=2", f"trainer.output_dir={out}", "trainer.export=false"],
        cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert {"reward/l1/abs_deviation", "response_length/mean"} <= set(metrics[1])
    assert "eval/reward/l1/abs_deviation" in metrics[-1] and "eval/accuracy" in metrics[-1]
    checked = 0
    for sample in read_jsonl(out / "rollouts.jsonl")[0]["samples"]:
        # the instruction ends the user's message, inside the chat template
        match = re.search(r"Think for (\d+) tokens\.<\|im_end\|>\n<\|im_start\|>assistant\n$", sample["prompt"])
        assert match, sample["prompt"]
        target = int(match.group(1))
        assert 20 <= target <= 60
        if "think>" not in sample["response"] and "answer>" not in sample["response"]:
            # wrong, and no thinking: 0 thinking tokens counted (not the response's length), alpha = 0.01
            assert sample["score"] == pytest.approx(-0.01 * target), sample
            checked += 1
    assert checked > 0
