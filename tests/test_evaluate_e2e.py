"""``launch.evaluate`` end to end on the local models: every method, real rollout and reward workers, reduced size."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import venv_env
from tests.zygote import python

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]  # its runs join the session's Ray cluster

REPO = Path(__file__).resolve().parents[1]
ALL = "[greedy,pass_at_k,maj_at_k,best_of_n,weighted_best_of_n,beam_search,dvts,mcts,budget_forcing]"


def evaluate(out: Path, *overrides: str) -> dict:
    proc = subprocess.run([python(), "-m", "launch.evaluate", *overrides, f"trainer.output_dir={out}"],
                          cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "eval_results.md").is_file() and (out / "eval_scaling.png").stat().st_size > 0
    return json.loads((out / "eval_results.json").read_text())


def rows_of(result: dict, method: str) -> dict[int, dict]:
    return {row["n"]: row for row in result["rows"] if row["method"] == method}


def test_every_method_on_the_arithmetic_model_with_the_exact_match_oracle(tmp_path):
    """With exact match as the verifier, best-of-N at N = eval.n picks a right answer exactly when any sample is
    right: it equals pass@k at k = N on the same samples. pass@k never falls as k grows."""
    n = 8
    result = evaluate(tmp_path / "arith", "--config", "launch/configs/grpo_arithmetic.yaml", f"eval.methods={ALL}",
                      f"eval.n={n}", "eval.verifier.name=exact_match", "data.max_eval_prompts=24",
                      "eval.beam_expansions=2", "eval.budgets=[2,4]", "eval.answer_tokens=2")
    assert result["problems"] == 24
    # each greedy response is kept, scored: their accuracy is the greedy row's
    samples = [json.loads(line) for line in (tmp_path / "arith" / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 24 and all(s["response_tokens"] > 0 for s in samples)
    right = sum(s["rewards"]["exact_match"] >= 1.0 for s in samples) / 24
    assert right == pytest.approx(rows_of(result, "greedy")[1]["accuracy"])
    assert {row["method"] for row in result["rows"]} == set(ALL.strip("[]").split(","))
    pass_at = rows_of(result, "pass_at_k")
    assert sorted(pass_at) == [1, 2, 4, 8]
    accuracy = [pass_at[k]["accuracy"] for k in sorted(pass_at)]
    assert accuracy == sorted(accuracy) and accuracy[-1] > accuracy[0]
    assert rows_of(result, "best_of_n")[n]["accuracy"] == pytest.approx(pass_at[n]["accuracy"])
    # the oracle orders every (right, wrong) pair of a problem's samples right; pass@8 > pass@1 means there are some
    ranking = result["verifier_ranking"]["verifier"]
    assert ranking["name"] == "exact_match" and ranking["pairs"] > 0 and ranking["pairwise_accuracy"] == 1.0
    # best-of-N with an oracle at smaller N is also the share of problems with a right answer among the first N:
    # never below maj@N, and at N = 1 all sampled methods read the same single sample
    for k in pass_at:
        assert rows_of(result, "best_of_n")[k]["accuracy"] >= rows_of(result, "maj_at_k")[k]["accuracy"]
    assert len({rows_of(result, m)[1]["accuracy"] for m in ("maj_at_k", "best_of_n", "weighted_best_of_n")}) == 1
    for row in result["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["tokens_per_problem"] > 0, row
    # searches spend about N candidates per step: more tokens at the larger budget
    beam = rows_of(result, "beam_search")
    assert beam[8]["tokens_per_problem"] > beam[2]["tokens_per_problem"]


def test_search_and_budget_forcing_on_the_reasoning_model(tmp_path):
    """Steps cut at ". ", and budget forcing caps the thinking at each budget."""
    result = evaluate(tmp_path / "reason", "--config", "launch/configs/reasoning_grpo.yaml",
                      "model.path=local://tiny-qwen2-reason", f"eval.methods={ALL}", "eval.n=4",
                      "data.max_eval_prompts=8", 'eval.step_delimiter=". "', "eval.beam_expansions=2",
                      "eval.verifier.name=r1_tag_count", "eval.budgets=[8,24]", "eval.answer_tokens=16",
                      "rollout.max_new_tokens=48", "eval.max_steps=6", "eval.step_tokens=16")
    forced = rows_of(result, "budget_forcing")
    assert sorted(forced) == [8, 24]
    for budget, row in forced.items():
        assert row["thinking_tokens"] <= budget, row  # never past the budget
        assert row["tokens_per_problem"] <= budget + 1 + 16, row
    assert forced[24]["thinking_tokens"] > forced[8]["thinking_tokens"]
    assert set(rows_of(result, "dvts")) == {2, 4} and set(rows_of(result, "mcts")) == {1, 2, 4}


def test_several_models_in_one_launch_each_with_its_own_weights(tmp_path, local_model):
    """``eval.models``: the engines start with the first model and load each next one's weights in place. Going
    back to the first model's weights after another's gives exactly its greedy responses again, and the other
    model's responses are its own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(local_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p))
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(local_model).save_pretrained(other)
    out = tmp_path / "eval"
    proc = subprocess.run([python(), "-m", "launch.evaluate", "--config", "launch/configs/grpo_arithmetic.yaml",
                           "data.max_eval_prompts=16", f"eval.models={{first: {local_model}, other: {other}, "
                           f"again: {local_model}}}", f"trainer.output_dir={out}"],
                          cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("| greedy |") == 3  # a table per model
    results = {name: json.loads((out / name / "eval_results.json").read_text()) for name in ("first", "other", "again")}
    assert [results[name]["model"] for name in results] == [local_model, str(other), local_model]
    samples = {name: (out / name / "eval_samples.jsonl").read_text().splitlines() for name in results}
    assert samples["again"] == samples["first"] and len(samples["first"]) == 16
    responses = {name: [json.loads(line)["response"] for line in lines] for name, lines in samples.items()}
    assert responses["other"] != responses["first"]
