"""reasoning-gym: ``reasoning_gym://`` data files whose rows carry their entry, the ``reasoning_gym`` reward term that
scores each sample with its dataset's own ``score_answer``, chain_sum's worked solutions, the one-line errors; end to
end (real Ray, vLLM, FSDP): a cold start, GRPO on the dataset's verifier, and ``launch.evaluate`` (pass@k, maj@k)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rewards.api import RewardSample, load_reward
from rewards.r1 import extract_answer, r1_format
from rlcore.assets import AssetError, resolve
from rlcore.tasks import reasoning_gym as rgt
from tests.test_agents_e2e import run
from tests.test_e2e import read_jsonl

reasoning_gym = pytest.importorskip("reasoning_gym")

CHAIN = "reasoning_gym://chain_sum?size=40&seed=7&min_terms=4&max_terms=5&max_digits=1"


def rows_of(uri: str, cache: Path) -> list[dict]:
    return read_jsonl(Path(resolve(uri, str(cache), "data.train_files")))


def sample(row: dict, response: str) -> RewardSample:
    return RewardSample("q", response, [], row["answer"], metadata={"reasoning_gym": row["reasoning_gym"]})


def test_rows_carry_the_entry_and_match_reasoning_gym_itself(tmp_path):
    rows = rows_of(CHAIN, tmp_path)
    entries = list(reasoning_gym.create_dataset("chain_sum", size=40, seed=7, min_terms=4, max_terms=5, max_digits=1))
    assert len(rows) == 40
    for row, entry in zip(rows, entries):
        assert row["reasoning_gym"] == {"dataset": "chain_sum", "entry": json.loads(json.dumps(entry))}
        assert row["answer"] == entry["answer"] and row["data_source"] == "reasoning_gym/chain_sum"
        assert row["prompt"] == [{"role": "user", "content": entry["question"] + " " + rgt.INSTRUCTION}]
    plain = rows_of(CHAIN + "&format=plain", tmp_path)
    assert plain[0]["prompt"][0]["content"] == entries[0]["question"]
    assert resolve(CHAIN, str(tmp_path), "k") == resolve(CHAIN, str(tmp_path), "k")  # cached: one file per address
    assert resolve(CHAIN, str(tmp_path), "k") != resolve(CHAIN.replace("seed=7", "seed=8"), str(tmp_path), "k")


def test_sft_rows_are_worked_solutions_the_verifier_accepts(tmp_path):
    rows = rows_of(CHAIN + "&rows=sft", tmp_path)
    reward = load_reward("reasoning_gym")
    responses = [row["messages"][1]["content"] for row in rows]
    assert reward.score([sample(r, text) for r, text in zip(rows, responses)]) == [1.0] * len(rows)
    assert all(r1_format("", text, "") == 1.0 for text in responses)
    entry = {"answer": "-2", "metadata": {"expression": "4 - 1 - 7 + 2"}}
    assert rgt.chain_sum_solution(entry) == "<think>4-1=3. 3-7=-4. -4+2=-2.</think><answer>-2</answer>"
    with pytest.raises(rgt.ReasoningGymError, match="gives -2, the entry says 5"):
        rgt.chain_sum_solution({**entry, "answer": "5"})


def test_an_imperfect_teacher_drops_the_sign_of_a_total_turning_negative_at_the_slip_rate(tmp_path):
    entry = {"answer": "-2", "metadata": {"expression": "4 - 1 - 7 + 2"}}
    assert rgt.chain_sum_solution(entry, 1.0) == "<think>4-1=3. 3-7=4. 4+2=6.</think><answer>6</answer>"
    assert rgt.chain_sum_solution({**entry, "metadata": {"expression": "-4 - 1 + 2"}, "answer": "-3"}, 1.0) == (
        "<think>-4-1=-5. -5+2=-3.</think><answer>-3</answer>")  # already negative: no crossing, no slip
    address = "reasoning_gym://chain_sum?size=400&seed=1&min_terms=4&max_terms=5&max_digits=1&rows=sft"
    right, slipped = rows_of(address, tmp_path), rows_of(address + "&slip=0.5", tmp_path)
    crossing = [i for i, row in enumerate(right) if rgt.chain_sum_solution(row["reasoning_gym"]["entry"], 1.0)
                != row["messages"][1]["content"]]
    changed = [i for i, (a, b) in enumerate(zip(right, slipped)) if a["messages"] != b["messages"]]
    assert set(changed) <= set(crossing) and 0.35 < len(changed) / len(crossing) < 0.65
    assert all(slipped[i]["answer"] == right[i]["answer"] for i in changed)  # the reference answer stays right
    assert rows_of(address + "&slip=0.5", tmp_path) == slipped  # seeded by the expression


def test_the_term_calls_each_datasets_own_score_answer(tmp_path):
    chain = rows_of(CHAIN, tmp_path)[0]
    other = rows_of("reasoning_gym://basic_arithmetic?size=4&seed=3", tmp_path)[0]
    reward = load_reward("reasoning_gym")
    right, wrong = f"<answer>{chain['answer']}</answer>", f"<answer>{int(chain['answer']) + 1}</answer>"
    scores = reward.score([sample(chain, right), sample(chain, wrong), sample(chain, chain["answer"]),
                           sample(other, f"<think>x</think><answer>{other['answer']}</answer>")])
    assert scores == [1.0, 0.0, 0.0, 1.0]  # no <answer> block: no answer
    score_answer = reasoning_gym.get_score_answer_fn("chain_sum")
    whole = load_reward("reasoning_gym", {"answer": "whole"})
    assert whole.score([sample(chain, f" {chain['answer']} "), sample(chain, right)]) == [
        1.0, score_answer(right, chain["reasoning_gym"]["entry"])]  # the dataset's own partial credit
    with pytest.raises(ValueError, match="no reasoning_gym entry"):
        reward.score([RewardSample("q", right, [], "1")])
    assert reward.answer.extract("<think>a</think><answer> 7 </answer>") == "7"


@pytest.mark.parametrize("uri, message", [
    ("reasoning_gym://chain_summ", "reasoning-gym has no dataset 'chain_summ' (did you mean chain_sum?)"),
    ("reasoning_gym://chain_sum?bogus=1", "reasoning_gym://chain_sum has no parameter 'bogus'; its config takes "
                                          "allow_negation, max_digits"),
    ("reasoning_gym://chain_sum?min_terms=-1", "min_terms must be positive"),
    ("reasoning_gym://chain_sum?rows=dpo", "rows=dpo is not one of rl, sft"),
    ("reasoning_gym://chain_sum?rows=sft&slip=1.5", "slip=1.5 is not a probability in [0, 1]"),
    ("reasoning_gym://chain_sum?rows=sft&slip=often", "slip=often is not a probability in [0, 1]"),
    ("reasoning_gym://chain_sum?slip=0.5", "slip=0.5 makes the worked solutions' teacher imperfect: it needs rows=sft"),
    ("reasoning_gym://leg_counting?rows=sft", "rows=sft needs worked solutions, written here for chain_sum only"),
    ("reasoning_gym://chain_sum?size", "the query is not key=value"),
    ("reasoning_gym://", "names no dataset"),
])
def test_a_wrong_address_is_one_line_naming_the_key(tmp_path, uri, message):
    with pytest.raises(AssetError) as info:
        resolve(uri, str(tmp_path), "data.eval_files")
    text = str(info.value)
    assert text.startswith("data.eval_files: ") and message in text and "\n" not in text


def test_the_extra_missing_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import then raises ImportError
    with pytest.raises(AssetError, match=r"needs the reasoning-gym extra \(pip install -e '.\[reasoning-gym\]'\)"):
        resolve(CHAIN, str(tmp_path), "data.train_files")
    with pytest.raises(RuntimeError, match="the reasoning_gym reward needs the reasoning-gym extra"):
        load_reward("reasoning_gym")


SHORT = ["data.prompts_per_step=8", "rollout.n=4", "learner.mini_batch_size=32", "learner.micro_batch_size=32",
         "data.max_eval_prompts=16"]
SFT_DATA = "reasoning_gym://chain_sum?size=400&seed=1&min_terms=4&max_terms=5&max_digits=1&rows=sft"
EVAL_DATA = "reasoning_gym://chain_sum?size=16&seed=100000&min_terms=4&max_terms=5&max_digits=1"


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_cold_start_grpo_and_evaluate_on_a_reasoning_gym_task(tmp_path):
    """The demonstration's presets, shortened: SFT on worked solutions, GRPO whose rewards are chain_sum's own
    verifier (every logged sample's score recomputed here with reasoning-gym), then pass@k and maj@k."""
    sft = tmp_path / "sft"
    run(sft, f"data.train_files=[{SFT_DATA!r}]", "data.eval_files=[]", "trainer.total_steps=20",
        "trainer.eval_every=0", "trainer.save_every=0", preset="launch/configs/rg_chain_sum_sft.yaml")
    grpo = tmp_path / "grpo"
    run(grpo, f"model.path={sft / 'final'}", f"data.eval_files=[{EVAL_DATA!r}]", "trainer.total_steps=2",
        "trainer.eval_every=2", "trainer.save_every=0", *SHORT, preset="launch/configs/rg_chain_sum_grpo.yaml")
    metrics = read_jsonl(grpo / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert {"reward/reasoning_gym", "reward/r1_format", "accuracy", "eval/accuracy"} <= set(metrics[2])
    score_answer = reasoning_gym.get_score_answer_fn("chain_sum")  # reads the entry's answer only
    samples = [s for step in read_jsonl(grpo / "rollouts.jsonl") for s in step["samples"]]
    assert len(samples) >= 2
    for s in samples:
        answer = extract_answer(s["response"])
        verifier = 0.0 if answer is None else score_answer(answer, {"answer": s["answer"]})
        assert s["score"] == pytest.approx(verifier + 0.5 * r1_format("", s["response"], ""), abs=1e-4), s
    from tests.test_evaluate_e2e import evaluate, rows_of as method_rows

    result = evaluate(tmp_path / "eval", "--config", "launch/configs/rg_chain_sum_grpo.yaml",
                      f"model.path={grpo / 'final'}", f"data.eval_files=[{EVAL_DATA!r}]", "data.max_eval_prompts=16",
                      "eval.n=4", "eval.methods=[greedy,pass_at_k,maj_at_k]")
    assert result["problems"] == 16
    pass_at = [method_rows(result, "pass_at_k")[k]["accuracy"] for k in (1, 2, 4)]
    assert pass_at == sorted(pass_at) and method_rows(result, "maj_at_k")[4]["accuracy"] <= pass_at[-1]
