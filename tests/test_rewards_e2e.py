"""A GRPO run with a composite reward (accuracy, format, L1) and a reward pool of two workers."""

import pytest

from tests.test_e2e import read_jsonl, train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]  # its runs join the session's Ray cluster

LENGTH_TARGET = "data.transforms=[{name: length_target, mode: exact, low: 2, high: 5}]"


def test_composite_reward_with_l1_and_two_workers(tmp_path):
    out = tmp_path / "composite"
    train(out, "trainer.total_steps=3", "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false",
          LENGTH_TARGET,
          "reward.terms=[{name: exact_match, weight: 1.0}, {name: r1_format, weight: 0.1},"
          " {name: l1, weight: 1.0, num_workers: 2, args: {mode: exact, accuracy: exact_match, alpha: 0.1}}]")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    last = records[-1]
    for key in ("reward/exact_match", "reward/r1_format", "reward/l1", "reward/l1/abs_deviation",
                "reward/l1/rel_deviation"):
        assert key in last, key
    # total = exact + 0.1 × format + l1, and l1 = exact − 0.1 × |N − n|: the logged-only deviation is not in it
    assert last["reward/mean"] == pytest.approx(last["reward/exact_match"] + 0.1 * last["reward/r1_format"]
                                                + last["reward/l1"], abs=1e-4)
    assert last["reward/l1"] == pytest.approx(last["reward/exact_match"] - 0.1 * last["reward/l1/abs_deviation"],
                                              abs=1e-4)
    assert all(r[f"reward_faults/{t}/errors"] == 0 for r in records for t in ("exact_match", "r1_format", "l1"))
    samples = read_jsonl(out / "rollouts.jsonl")[0]["samples"]
    assert "Think for" in samples[0]["prompt"]


def test_l1_preset_length_deviation_falls(tmp_path):
    out = tmp_path / "l1"
    train(out, "trainer.total_steps=12", "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false",
          "data.prompts_per_step=64", "rollout.n=8", "learner.mini_batch_size=256",
          preset="launch/configs/l1_arithmetic.yaml")
    deviation = [r["reward/l1/abs_deviation"] for r in read_jsonl(out / "metrics.jsonl")]
    assert sum(deviation[-3:]) / 3 < 0.8 * sum(deviation[:3]) / 3
