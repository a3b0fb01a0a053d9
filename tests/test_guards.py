"""Guards of a long run: updates skipped on a non-finite loss, and checkpoints a cut-short save cannot spoil."""

import json
import math

import pytest
import torch

from launch.checkpoints import STATE_FILE, Checkpoints
from launch.trainer import SkippedUpdates, TrainingError


def test_skipped_updates_stop_the_run_after_the_limit_in_a_row_naming_the_step():
    guard = SkippedUpdates(limit=2)
    guard.check(1, {"actor/skipped_steps": 1.0, "critic/skipped_steps": 0.0})
    guard.check(2, {"actor/skipped_steps": 0.0})  # a clean step resets the streak
    guard.check(3, {"actor/skipped_steps": 2.0, "actor/grad_norm": math.nan})
    with pytest.raises(TrainingError, match=r"^step 4: learner group 'actor' skipped its update .* 2 steps in a row"):
        guard.check(4, {"actor/skipped_steps": 1.0})
    SkippedUpdates(limit=0).check(5, {"actor/skipped_steps": 9.0})  # 0: never stops


class FakeGroup:
    """Writes one file per checkpoint; ``fail`` makes the save raise halfway, as a killed process would stop."""

    def __init__(self):
        self.fail, self.loaded = False, None

    def save_checkpoint(self, path):
        if self.fail:
            raise KeyboardInterrupt
        from pathlib import Path

        Path(path).mkdir(parents=True)
        (Path(path) / "weights").write_text(path)

    def load_checkpoint(self, path):
        self.loaded = path


def test_a_save_cut_short_leaves_the_previous_checkpoint_in_use(tmp_path):
    group = FakeGroup()
    checkpoints = Checkpoints(tmp_path, {"actor": group}, keep=2)
    checkpoints.save(10, {"policy_version": 10})
    group.fail = True
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(20, {"policy_version": 20})
    (tmp_path / "step_000020").mkdir()
    (tmp_path / "step_000020" / f"{STATE_FILE}.partial").write_text('{"step": 2')  # a state write cut short
    path, state = checkpoints.restore()
    assert path.name == "step_000010" and state == {"step": 10, "policy_version": 10}
    assert group.loaded.endswith("step_000010/actor")
    assert json.loads((tmp_path / "step_000010" / STATE_FILE).read_text())["step"] == 10


def test_the_learner_skips_an_update_whose_gradient_is_not_finite(local_model):
    from actors.learner import LearnerRank, free_address
    from launch.build import configure
    from tests.test_learner_local import sampled_batch

    plan = configure(None, [f"model.path={local_model}", "learner.mini_batch_size=4", "data.prompts_per_step=1",
                            "learner.micro_batch_size=4", "learner.lr=1e-2"])
    group, algorithm = plan.learners["actor"], plan.algorithm
    batch = sampled_batch(local_model)
    batch.ref_logprobs = torch.zeros_like(batch.response_mask)
    algorithm.compute_advantages(batch)
    learner = LearnerRank(plan.cfg, algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    try:
        batch.old_logprobs = before = learner.forward(batch, "logprobs")
        loss = algorithm.loss
        calls = []

        def poisoned(outputs, micro):  # the second mini-batch's loss is NaN
            value, metrics = loss(outputs, micro)
            calls.append(1)
            return (value * math.nan if len(calls) == 2 else value), metrics

        algorithm.loss = poisoned
        metrics = learner.train_step(batch, 1, algorithm.state_dict())
        assert metrics["skipped_steps"] == 1.0 and math.isfinite(metrics["grad_norm"])  # 2 mini-batches, 1 skipped
        after = learner.forward(batch, "logprobs")
        assert torch.isfinite(after).all() and not torch.allclose(after, before)  # the first one still updated
        algorithm.loss = lambda outputs, micro: (loss(outputs, micro)[0] * math.nan, {})
        frozen = learner.forward(batch, "logprobs")
        assert learner.train_step(batch, 2, algorithm.state_dict())["skipped_steps"] == 2.0
        assert torch.equal(learner.forward(batch, "logprobs"), frozen)  # nothing moved
    finally:
        learner.shutdown()
