"""Algorithm plug-ins end to end: real Ray, vLLM rollout, FSDP learner, on the local model."""

import pytest

from tests.test_e2e import read_jsonl, train

pytestmark = pytest.mark.slow


def test_user_algorithm_from_outside_the_package_runs(tmp_path):
    out = tmp_path / "toy"
    train(out, "trainer.total_steps=2", "trainer.save_every=0", "trainer.export=false",
          "algorithm.name=tests.plugins.toy_algorithm:SignGRPO")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["actor/toy_marker"] == 1.0 for r in records)  # its loss ran inside the learners


def test_dapo_dynamic_sampling_trains_only_on_informative_groups(tmp_path):
    out = tmp_path / "dapo"
    train(out, "trainer.total_steps=3", "trainer.save_every=0", "trainer.export=false", "algorithm.max_sampling_rounds=8",
          preset="launch/configs/dapo_arithmetic.yaml")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["sampling/zero_variance_groups"] == 0 and r["sampling/filled_groups"] == 0 for r in records)
    # With 16 prompts × 4 samples at ~30% accuracy many groups are all wrong: they were dropped.
    assert sum(r["sampling/dropped_groups"] for r in records) > 0
    assert all(r["sampling/rounds"] >= 1 for r in records)
