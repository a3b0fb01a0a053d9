"""Reward functions written for verl and TRL run as reward terms, unchanged: the calling convention told apart by
the parameters (or ``kind``), verl's dict results, TRL's batched call with the dataset's columns, conversational
prompts and completions, and its ``None`` ("not applicable": the other terms still count)."""

import json
import math

import pytest

from launch.build import configure
from rewards.api import RewardSample, build_reward, check_scores, function_kind
from rlcore.config import ConfigError
from tests.plugins import trl_rewards, verl_gsm8k
from tests.test_batch import make

VERL = "tests.plugins.verl_gsm8k:compute_score"
FORMAT, ACCURACY = "tests.plugins.trl_rewards:format_reward", "tests.plugins.trl_rewards:accuracy_reward"
GSM8K = {"data_source": "openai/gsm8k", "extra_info": {"split": "train", "index": 7, "format_score": 0.2}}
CHAT = [{"role": "user", "content": "What is 6 times 7?"}]


def sample(response: str, truth: str = "42", metadata: dict | None = None, chat: bool = False) -> RewardSample:
    return RewardSample("What is 6 times 7?", response, [1, 2, 3], truth, metadata or {},
                        prompt_messages=CHAT if chat else None)


def test_the_calling_convention_is_told_apart_by_the_parameters():
    assert function_kind(verl_gsm8k.compute_score) == "verl"
    assert function_kind(trl_rewards.format_reward) == function_kind(trl_rewards.accuracy_reward) == "trl"
    assert function_kind(lambda prompt, response, ground_truth: 0.0) == "native"
    assert function_kind(trl_rewards.format_reward, "native") == "native"  # kind wins over the guess


def test_a_verl_compute_score_gets_data_source_and_extra_info_and_its_dict_is_logged():
    reward = build_reward(VERL, verl_gsm8k.compute_score, {})
    rows = check_scores("v", reward.score([sample("so #### 42", metadata=GSM8K), sample("#### 41", metadata=GSM8K),
                                           sample("no idea", metadata=GSM8K)]), 3)
    assert [r[""] for r in rows] == [1.0, 0.2, 0.0]  # 0.2: extra_info's format_score reached the function
    assert [r["_acc"] for r in rows] == [1.0, 0.0, 0.0]  # its bool logged as a number; the 'pred' string left out
    assert all("_pred" not in r for r in rows)
    with pytest.raises(NotImplementedError, match="other/source"):  # data_source is the row's own
        reward.score([sample("#### 42", metadata={"data_source": "other/source"})])


def test_trl_rewards_get_conversational_completions_the_columns_and_none():
    accuracy = build_reward(ACCURACY, trl_rewards.accuracy_reward, {})
    fmt = build_reward(FORMAT, trl_rewards.format_reward, {})
    samples = [sample("<think>6*7</think><answer>42</answer>", metadata={"solution": "42"}, chat=True),
               sample("<answer>41</answer>", metadata={"solution": "42"}, chat=True),
               sample("<think>?</think><answer>1</answer>", metadata={"solution": "a proof"}, chat=True)]
    assert check_scores("f", fmt.score(samples), 3) == [{"": 1.0}, {"": 0.0}, {"": 1.0}]
    rows = check_scores("a", accuracy.score(samples), 3)
    assert [r[""] for r in rows[:2]] == [1.0, 0.0] and math.isnan(rows[2][""])  # None: not applicable
    assert rows[0]["_gold_parsed"] == pytest.approx(2 / 3)  # log_metric's value, logged with the term


def test_a_trl_reward_sees_string_prompts_and_completions_for_standard_rows():
    seen = {}

    def reward(prompts, completions, completion_ids, ground_truth, level, **kwargs):
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, truth=ground_truth, level=level)
        return [float(len(c)) for c in completions]

    out = build_reward("r", reward, {}).score([sample("abc", metadata={"level": 2}), sample("de", metadata={})])
    assert out == [3.0, 2.0]
    assert seen == {"prompts": ["What is 6 times 7?"] * 2, "completions": ["abc", "de"], "ids": [[1, 2, 3]] * 2,
                    "truth": ["42", "42"], "level": [2, None]}  # a column a row lacks is None there


def test_a_wrong_kind_is_one_line_naming_the_term():
    with pytest.raises(ConfigError, match=r"reward.terms\[0\].kind='tf' is not one of auto, native, verl, trl"):
        configure(None, ["reward.terms=[{name: exact_match, kind: tf}]"])
    with pytest.raises(ConfigError, match=r"reward.terms\[0\].kind: reward 'exact_match' is called as kind=verl but "
                                          r"takes no solution_str parameter"):
        configure(None, ["reward.terms=[{name: exact_match, kind: verl}]"])
    with pytest.raises(ConfigError, match=r"reward.terms\[0\].kind: reward 'exact_match' is called as kind=trl, which "
                                          r"passes every column as a keyword argument \(as TRL does\), but takes no "
                                          r"\*\*kwargs"):
        configure(None, ["reward.terms=[{name: exact_match, kind: trl}]"])


@pytest.mark.slow
def test_verl_and_trl_rewards_score_in_reward_actors_and_none_leaves_the_other_terms(local_ray, tmp_path):
    """Real reward actors (two for the verl term): the terms' values, their weighted sum with TRL's None counted as
    nothing, and the metrics' means over the samples each term applies to."""
    from actors.groups import RewardGroup, wait_ready
    from launch.sources import reward_stats

    plan = configure(None, [f"reward.terms=[{{name: '{VERL}', num_workers: 2}}, {{name: '{ACCURACY}', weight: 2.0}},"
                            f" {{name: '{FORMAT}', weight: 0.5}}]", f"reward.accuracy_term={ACCURACY}"])
    group = RewardGroup(plan.reward_terms)
    wait_ready([group])
    batch = make([[1, 2]] * 4)
    batch.responses = ["<think>x #### 42</think><answer>42</answer>", "<answer>42</answer> #### 41",
                       "<think>y #### 5</think><answer>5</answer>", "#### 3"]
    batch.answers = ["42", "42", "5", "3"]
    batch.metadata = [{**GSM8K, "solution": s} for s in ("42", "42", "5", "n/a")]
    batch.prompt_messages = [CHAT] * 4
    metrics = group.score(batch)
    terms = batch.reward_terms
    assert terms[VERL].tolist() == pytest.approx([1.0, 0.2, 1.0, 1.0]) and terms[f"{VERL}/acc"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert terms[ACCURACY].tolist()[:3] == [1.0, 1.0, 1.0] and math.isnan(terms[ACCURACY][3])
    assert terms[FORMAT].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert batch.scores.tolist() == pytest.approx([3.5, 2.2, 3.5, 1.0])  # the last: verl's 1.0 alone
    stats = reward_stats(batch, ACCURACY)
    assert stats[f"reward/{ACCURACY}"] == 1.0 and stats["accuracy"] == 0.75  # the mean over the 3 it applies to
    assert metrics[f"reward_faults/{ACCURACY}/errors"] == 0
    json.dumps(stats)  # no NaN reaches the metrics
