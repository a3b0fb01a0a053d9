"""Reward pools on a local Ray: weighting, named parts, and faults that never stop the run."""

import time
from types import SimpleNamespace

import pytest

from launch.build import configure
from tests.test_batch import make

pytestmark = pytest.mark.slow


def batch_of(responses, answers):
    batch = make([[1, 2]] * len(responses))
    batch.responses, batch.answers = list(responses), list(answers)
    return batch


def reward_group(terms: str):
    from actors.groups import RewardGroup, wait_ready

    group = RewardGroup(configure(None, [f"reward.terms={terms}", "reward.accuracy_term=exact_match"]).reward_terms)
    wait_ready([group])
    return group


def test_weighted_terms_named_parts_and_worker_pools(local_ray):
    group = reward_group("[{name: exact_match, weight: 2.0, num_workers: 2},"
                         " {name: 'tests.plugins.user_rewards:Parts', weight: 1.0, args: {bonus: 0.5}},"
                         " {name: 'tests.plugins.user_rewards:AsyncLength', weight: 0.0}]")
    batch = batch_of(["3", "4", "5"], ["3", "0", "5"])
    metrics = group.score(batch)
    assert batch.reward_terms["exact_match"].tolist() == [1.0, 0.0, 1.0]
    parts = "tests.plugins.user_rewards:Parts"
    assert batch.reward_terms[f"{parts}/correct"].tolist() == [1.0, 0.0, 1.0]
    assert batch.reward_terms[parts].tolist() == [1.5, 0.5, 1.5]
    assert batch.scores.tolist() == [3.5, 0.5, 3.5]  # 2 × exact + parts + 0 × length
    assert metrics["reward_faults/exact_match/errors"] == 0


def test_raising_reward_gets_failure_score_and_run_goes_on(local_ray, capsys):
    group = reward_group("[{name: exact_match}, {name: 'tests.plugins.user_rewards:fragile', failure_score: -1.0}]")
    batch = batch_of(["1", "boom", "2"], ["1", "1", "1"])
    metrics = group.score(batch)
    assert batch.reward_terms["tests.plugins.user_rewards:fragile"].tolist() == [1.0, -1.0, 1.0]
    assert metrics["reward_faults/tests.plugins.user_rewards:fragile/errors"] == 1
    assert capsys.readouterr().out.count("its traceback:") == 1  # printed once
    later = batch_of(["7", "x"], ["7", "7"])  # the pool still works: its actor was not lost
    metrics = group.score(later)
    assert later.reward_terms["tests.plugins.user_rewards:fragile"].tolist() == [1.0, 1.0]
    assert metrics["reward_faults/tests.plugins.user_rewards:fragile/errors"] == 0
    assert metrics["reward_faults/tests.plugins.user_rewards:fragile/restarts"] == 0


def test_hanging_reward_times_out_and_is_replaced(local_ray):
    group = reward_group("[{name: exact_match}, {name: 'tests.plugins.user_rewards:Sleepy', timeout_s: 2, failure_score: -2.0}]")
    start = time.time()
    metrics = group.score(batch_of(["1", "2"], ["1", "1"]))
    assert time.time() - start < 30
    assert metrics["reward_faults/tests.plugins.user_rewards:Sleepy/timeouts"] == 2
    assert metrics["reward_faults/tests.plugins.user_rewards:Sleepy/restarts"] == 1


def test_killed_reward_actor_is_replaced_and_batch_retried(local_ray, tmp_path):
    marker = tmp_path / "died"
    group = reward_group(f"[{{name: exact_match}}, {{name: 'tests.plugins.user_rewards:DiesOnce', args: {{marker: '{marker}'}}}}]")
    batch = batch_of(["1", "2"], ["1", "1"])
    metrics = group.score(batch)
    name = "tests.plugins.user_rewards:DiesOnce"
    assert marker.exists()  # it did die
    assert batch.reward_terms[name].tolist() == [1.0, 1.0]  # the retry scored the batch
    assert metrics[f"reward_faults/{name}/restarts"] == 1 and metrics[f"reward_faults/{name}/errors"] == 0


FAILS_TO_START = "tests.plugins.user_rewards:FailsToStart"
START_LINE = f"reward '{FAILS_TO_START}' failed to start: no model at /nowhere (export one first)"


def test_reward_class_whose_constructor_raises_is_one_line(local_ray):
    """Not Ray's ``ActorDiedError`` with the traceback inside it: the term's name and the error's message, one line."""
    from actors.groups import RewardGroup, wait_ready
    from rewards.api import RewardStartError

    group = RewardGroup(configure(None, [f"reward.terms=[{{name: exact_match}}, {{name: '{FAILS_TO_START}'}}]",
                                         "reward.accuracy_term=exact_match"]).reward_terms)
    with pytest.raises(RewardStartError) as info:
        wait_ready([group])
    assert str(info.value) == START_LINE


def test_train_exits_2_with_one_line_when_a_reward_fails_to_start(local_ray, monkeypatch, capsys):
    """``python -m launch.train``'s main: the roles start (here the reward workers only), one fails, exit code 2."""
    import launch.train as train_module
    import launch.trainer as trainer_module
    from actors.groups import RewardGroup, wait_ready

    plan = configure(None, [f"reward.terms=[{{name: exact_match}}, {{name: '{FAILS_TO_START}'}}]",
                            "reward.accuracy_term=exact_match"])

    class Starting:  # the trainer's start-up: every role's actors, then wait_ready
        def __init__(self, plan, data, stop):
            wait_ready([RewardGroup(plan.reward_terms)])

    folder = SimpleNamespace(release=lambda: None)  # the claimed output folder (launch.train.claim)
    monkeypatch.setattr(train_module, "plan_data_and_ray", lambda *args, **kwargs: (plan, None, False, folder))
    monkeypatch.setattr(trainer_module, "Trainer", Starting)
    monkeypatch.setattr(trainer_module.StopRequest, "install", lambda self: None)  # pytest keeps its signals
    assert train_module.main([]) == 2
    assert capsys.readouterr().err.strip() == f"input error: {START_LINE}"
