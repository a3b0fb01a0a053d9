"""The rollout pool's speed-weighted split, and ``launch.scale``'s request/reply protocol with a driver."""

import threading
import time

import pytest

from actors.groups import weighted_split
from launch import scale
from launch.run_dir import holder, lock
from launch.scale import ScaleRequests


def sizes(bounds: list[tuple[int, int]]) -> list[int]:
    return [b - a for a, b in bounds]


def contiguous(bounds: list[tuple[int, int]], count: int) -> bool:
    return bounds[0][0] == 0 and bounds[-1][1] == count and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))


def test_unmeasured_workers_get_even_shares():
    assert weighted_split(10, [None, None, None]) == [(0, 4), (4, 7), (7, 10)]
    assert sizes(weighted_split(2, [None, None, None])) == [1, 1, 0]


def test_shares_follow_the_measured_speeds():
    bounds = weighted_split(64, [30.0, 10.0])  # the first worker is three times as fast
    assert contiguous(bounds, 64) and sizes(bounds) == [48, 16]
    bounds = weighted_split(10, [1.0, 2.0, 2.0])
    assert contiguous(bounds, 10) and sizes(bounds) == [2, 4, 4]


def test_largest_remainders_round_up_and_nothing_is_lost():
    for count in range(0, 40):
        bounds = weighted_split(count, [3.0, 5.0, 7.0])
        assert contiguous(bounds, count) or count == 0
        assert sum(sizes(bounds)) == count
        exact = [count * w / 15 for w in (3.0, 5.0, 7.0)]
        assert all(abs(s - e) < 1 for s, e in zip(sizes(bounds), exact)), (count, sizes(bounds))


def test_a_new_worker_counts_as_the_mean_of_the_measured_ones():
    # a worker just added (no measurement yet) takes the average speed: 20 of 60 here
    assert sizes(weighted_split(60, [10.0, 30.0, None])) == [10, 30, 20]


def test_a_slow_worker_does_not_hold_the_step_up():
    """With the split by speed, every worker finishes at about the same time; with even shares the slow one sets
    the pace."""
    speeds = [40.0, 40.0, 10.0]  # items per second; the third runs on a slow node
    def finish(bounds):
        return max((b - a) / v for (a, b), v in zip(bounds, speeds))
    assert finish(weighted_split(90, speeds)) < 0.5 * finish(weighted_split(90, [None] * 3))


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    return out


def driver(run_dir, answer, delay: float = 0.2):
    """A driver (the folder's lock held) whose thread takes the request after ``delay`` and replies with
    ``answer(request)``."""
    requests = ScaleRequests(run_dir)
    requests.lock = lock(run_dir, "launch.train")

    def serve():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            request = requests.take()
            if request is not None:
                time.sleep(delay)
                requests.reply(request, **answer(request))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return requests, thread


def test_the_driver_applies_the_request_and_the_command_prints_the_reply(run_dir, capsys):
    requests, thread = driver(run_dir, lambda r: {"before": 1, "after": r["num_workers"], "step": 7})
    assert scale.main([str(run_dir), "rollout.num_workers=3", "--timeout", "10"]) == 0
    thread.join()
    assert capsys.readouterr().out.splitlines()[-1] == "rollout.num_workers: 1 -> 3 from step 7"
    assert not (run_dir / scale.REQUEST).exists()  # taken once
    requests.lock.release()
    assert holder(run_dir) is None


def test_a_refused_request_is_one_line_and_exit_1(run_dir, capsys):
    requests, thread = driver(run_dir, lambda r: {"error": "the cluster has too little free rollout_node"})
    assert scale.main([str(run_dir), "rollout.num_workers=5", "--timeout", "10"]) == 1
    thread.join()
    requests.lock.release()
    assert capsys.readouterr().err == "scale error: the cluster has too little free rollout_node\n"


@pytest.mark.parametrize("setting", ["rollout.num_workers=0", "rollout.n=4", "rollout.num_workers=two"])
def test_a_bad_setting_exits_2_naming_it(run_dir, capsys, setting):
    held = lock(run_dir, "launch.train")
    assert scale.main([str(run_dir), setting]) == 2
    held.release()
    assert capsys.readouterr().err == f"scale error: expected rollout.num_workers=N with N >= 1, got '{setting}'\n"
    assert not (run_dir / scale.REQUEST).exists()


def test_no_running_job_exits_2_naming_the_dir(run_dir, capsys):
    assert scale.main([str(run_dir), "rollout.num_workers=2"]) == 2
    lock(run_dir, "launch.train").release()  # a driver that has ended leaves its lock file, not its lock
    assert scale.main([str(run_dir), "rollout.num_workers=2"]) == 2
    assert capsys.readouterr().err == 2 * (f"scale error: no running job writes to {run_dir.resolve()} (no driver "
                                           "holds its lock); give the job's trainer.output_dir\n")


def test_an_unanswered_request_is_withdrawn(run_dir, capsys):
    held = lock(run_dir, "launch.train")  # a driver that never looks
    assert scale.main([str(run_dir), "rollout.num_workers=2", "--timeout", "1"]) == 1
    held.release()
    assert "did not apply the request in 1 s; it was withdrawn" in capsys.readouterr().err
    assert not (run_dir / scale.REQUEST).exists()
