"""Algorithm plug-ins end to end: real Ray, vLLM rollout, FSDP learners, on the local model."""

import json

import pytest

from tests.test_e2e import read_jsonl, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]  # its runs join the session's Ray cluster


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def test_user_algorithm_with_its_own_options_and_source(tmp_path, arithmetic_files):
    out = tmp_path / "toy"
    train(out, "trainer.total_steps=3", "trainer.save_every=0", "trainer.export=false",
          "algorithm.name=tests.plugins.toy_algorithm:SignGRPO", "algorithm.scale=0.5", "algorithm.max_answer=20")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    # Its options reached it: every advantage is ±0.5 (or 0), and the driver logged the option it returned.
    assert all(r["algorithm/scale"] == 0.5 and r["actor/max_advantage"] == pytest.approx(0.5) for r in records)
    # The driver-side state reached the learner ranks before each update.
    assert [r["actor/updates_seen"] for r in records] == [1.0, 2.0, 3.0]
    # Its own source trained only on prompts whose answer is at most 20.
    answers = [json.loads(line)["answer"] for line in open(arithmetic_files[0])]
    easy = sum(int(a) <= 20 for a in answers)
    assert all(r["curriculum/rows"] == easy for r in records) and easy < len(answers)
    trained = [i for r in read_jsonl(out / "rollouts.jsonl") for i in r["prompt_indices"]]  # data-set positions
    assert len(trained) == 3 * 16 and all(int(answers[i]) <= 20 for i in trained)


def test_dapo_dynamic_sampling_trains_only_on_informative_groups(tmp_path):
    out = tmp_path / "dapo"
    train(out, "trainer.total_steps=3", "trainer.save_every=0", "trainer.export=false", "algorithm.max_sampling_rounds=8",
          preset="launch/configs/dapo_arithmetic.yaml")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["sampling/zero_variance_groups"] == 0 and r["sampling/filled_groups"] == 0 for r in records)
    # With 16 prompts × 4 samples at ~30% accuracy many groups are all wrong: they were dropped, and every step
    # that dropped groups drew more prompts to replace them.
    assert sum(r["sampling/dropped_groups"] for r in records) > 0
    assert all((r["sampling/rounds"] > 1) == (r["sampling/dropped_groups"] > 0) for r in records)
    # Each trained batch holds exactly data.prompts_per_step groups.
    assert [len(r["prompt_indices"]) for r in read_jsonl(out / "rollouts.jsonl")] == [16, 16, 16]


def test_ppo_reward_up_and_value_loss_down(tmp_path):
    out = tmp_path / "ppo"
    train(out, "trainer.total_steps=10", "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false",
          "data.prompts_per_step=64", "rollout.n=8", "learner.mini_batch_size=256",
          preset="launch/configs/ppo_arithmetic.yaml")
    records = read_jsonl(out / "metrics.jsonl")
    assert "actor/pg_loss" not in records[0] and "actor/pg_loss" in records[2]  # critic warm-up: 2 steps
    assert [r["policy_version"] for r in records[:4]] == [0, 0, 1, 2]
    value_loss = [r["critic/value_loss"] for r in records]
    reward = [r["reward/mean"] for r in records]
    # The fresh value head starts far off; what is left later is mostly the returns' own variance.
    assert mean(value_loss[-4:]) < 0.9 * value_loss[0]
    assert mean(reward[-4:]) > mean(reward[:4]) + 0.03


def test_offline_dpo_held_out_preference_accuracy_rises(tmp_path):
    out = tmp_path / "dpo"
    train(out, "trainer.total_steps=20", "trainer.eval_every=10", "trainer.save_every=0", "trainer.export=false",
          "data.prompts_per_step=32", "learner.mini_batch_size=64", preset="launch/configs/dpo_arithmetic.yaml")
    records = read_jsonl(out / "metrics.jsonl")
    evals = [r["eval/preference_accuracy"] for r in records if "eval/preference_accuracy" in r]
    assert len(evals) == 3 and evals[0] == 0.5  # step 0: policy = reference, every margin ties
    assert evals[1] > 0.5 and evals[2] > evals[1]
    assert {"actor/dpo_loss", "actor/chosen_reward", "actor/rejected_reward", "actor/margin"} <= set(records[-1])
    assert "time/rollout" not in records[-1]  # offline: no rollout workers


def test_online_dpo_reward_up(tmp_path):
    out = tmp_path / "online_dpo"
    train(out, "trainer.total_steps=10", "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false",
          "data.prompts_per_step=64", "rollout.n=8", "learner.mini_batch_size=64",
          preset="launch/configs/online_dpo_arithmetic.yaml")
    records = read_jsonl(out / "metrics.jsonl")
    reward = [r["reward/mean"] for r in records]
    assert mean(reward[-4:]) > mean(reward[:4]) + 0.03  # trained on its own best-vs-worst pairs, it improves
    assert [r["policy_version"] for r in records] == list(range(1, 11))
