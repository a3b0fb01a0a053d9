"""Real runs through faults, on the session's Ray cluster (ctrl-c's run on a local Ray of its own, as a user's
command in a terminal runs): a signal stops a run after its step with a checkpoint and one line on how to resume; the
rollout pool grows mid-run and a killed rollout worker is replaced, its share generated again; a killed reference
worker is replaced; a killed learner rank restarts its group from the newest checkpoint. No step is lost or trained
twice."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from tests.conftest import RayHead, sharing
from tests.test_e2e import PRESET, REPO, SMALL, read_jsonl, venv_env
from tests.zygote import python

pytestmark = pytest.mark.slow


def started_run(out: Path, cluster: RayHead | None, steps: int = 200, extra: list[str] = (),
                forked: bool = False) -> subprocess.Popen:
    """A GRPO run in its own process group (as a terminal starts a command), once it has logged two steps; it joins
    ``cluster``, or without one starts a local Ray of its own. ``forked``: the driver is forked from the tests'
    zygote (``tests.zygote``, its imports done), for runs whose driver process itself is not under test."""
    with sharing(cluster.address) if cluster else nullcontext():
        env = venv_env()
    proc = subprocess.Popen([python() if forked else sys.executable, "-m", "launch.train", "--config", PRESET, *SMALL,
                             f"trainer.total_steps={steps}", "trainer.save_every=0", "trainer.export=false",
                             f"trainer.output_dir={out}", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "metrics.jsonl").is_file() and len(read_jsonl(out / "metrics.jsonl")) >= 2:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the run logged no two steps in 300 s")


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c to the process group", "sigterm to the driver"])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_one_line(tmp_path, ray_head, signum, to_group):
    out = tmp_path / "run"
    proc = started_run(out, None if to_group else ray_head)  # ctrl-c reaches the local Ray's processes too
    if not to_group:  # meanwhile, a second run into the same folder is refused, naming this one
        second = subprocess.run([python(), "-m", "launch.train", "--config", PRESET, *SMALL,
                                 f"trainer.output_dir={out}", "trainer.resume=true"], cwd=REPO, env=venv_env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert re.fullmatch(rf"config error: trainer.output_dir={re.escape(str(out.resolve()))} is in use by another "
                            rf"driver \(launch.train pid {proc.pid} on \S+, since [\d:\- ]+\); wait for it to end or "
                            r"choose another trainer.output_dir", second.stderr.strip()), second.stderr[-3000:]
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    step = len(read_jsonl(out / "metrics.jsonl"))  # every finished step was logged, none after the stop
    assert last == (f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint "
                    f"{out.resolve()}/checkpoints/step_{step:06d}; resume with the same command and "
                    "trainer.resume=true"), stderr[-3000:]
    assert (out / "checkpoints" / f"step_{step:06d}" / "trainer_state.json").is_file()
    assert "Traceback" not in stderr
    assert step < 200


def kill_role(proc: subprocess.Popen, out: Path, cluster: RayHead, role: str,
              count: int = 1) -> subprocess.CompletedProcess:
    """``kill -9`` the last started of the ``count`` live ``role`` actors of the run ``proc`` writing to ``out``, on
    ``cluster`` (Ray's state API: the job whose driver holds ``out``'s lock, then its actors); the run's output once
    it ends."""
    from ray.util.state import list_actors, list_jobs

    driver = json.loads((out / "driver.lock").read_text())["pid"]
    job = next(j.job_id for j in list_jobs(address=cluster.dashboard)
               if j.driver_info and int(j.driver_info.pid) == driver)
    found = list_actors(address=cluster.dashboard, detail=True,
                        filters=[("class_name", "=", role), ("state", "=", "ALIVE"), ("job_id", "=", job)])
    pids = sorted(a.pid for a in found)
    assert len(pids) == count, found
    os.kill(pids[-1], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def scale(out: Path, count: int) -> str:
    """``python -m launch.scale`` until the job applies it (a node just started may not have registered yet); its
    output."""
    for _ in range(30):
        done = subprocess.run([python(), "-m", "launch.scale", str(out), f"rollout.num_workers={count}"],
                              cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return done.stdout
        assert "too little free" in done.stderr, done.stderr
        time.sleep(2)
    raise AssertionError(f"the cluster never had room for {count} rollout workers")


def test_the_pool_grows_and_a_killed_rollout_worker_is_replaced_and_no_step_is_lost(tmp_path, ray_head):
    """``launch.scale`` adds a worker mid-run, then one of the two is killed."""
    out = tmp_path / "run"
    proc = started_run(out, ray_head, steps=10, forked=True)
    grown = re.fullmatch(r"rollout.num_workers: 1 -> 2 from step (\d+)", scale(out, 2).splitlines()[-1])
    assert grown, grown
    done = kill_role(proc, out, ray_head, "RolloutWorker", count=2)
    stdout, stderr = done.stdout, done.stderr
    assert done.returncode == 0, stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 11))  # every step once
    assert [m["policy_version"] for m in metrics] == list(range(1, 11))  # each trained once
    first = int(grown[1])
    assert [m["rollout/num_workers"] for m in metrics] == [1] * (first - 1) + [2] * (11 - first)
    assert first <= 8, "the run was nearly over before it grew: raise its steps"
    # killed while generating (its share generated again) or between two calls (replaced at the weight sync)
    assert metrics[-1]["faults/rollout/restarts"] == 1 and metrics[0]["faults/rollout/restarts"] == 0
    assert re.search(r"rollout worker \d died", stdout)
    # the replacement samples with the newest weights: the learner's log-probs of its samples match vLLM's
    assert max(m["actor/rollout_gap/abs_diff_mean"] for m in metrics) < 1e-3, [
        m["actor/rollout_gap/abs_diff_mean"] for m in metrics]


TWO_RANKS = ["learner.world_size=2", "trainer.save_every=2", "trainer.export=false"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, ray_head) -> list[dict]:
    """The metrics of an uninterrupted 6-step run with a two-rank learner, for the runs with a fault to match."""
    out = tmp_path_factory.mktemp("clean") / "run"
    with sharing(ray_head.address):
        env = venv_env()
    proc = subprocess.run([python(), "-m", "launch.train", "--config", PRESET, *SMALL, *TWO_RANKS,
                           "trainer.total_steps=6", f"trainer.output_dir={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_jsonl(out / "metrics.jsonl")


def test_a_killed_reference_worker_is_replaced_and_no_step_is_lost(tmp_path, ray_head, clean_run):
    """The reference in its own actor (reference.host=own; the clean run's is inside the learner ranks): the
    replacement is the same frozen policy, so every step's KL to it is the uninterrupted run's."""
    out = tmp_path / "run"
    proc = started_run(out, ray_head, steps=4, extra=[*TWO_RANKS, "reference.host=own"], forked=True)
    done = kill_role(proc, out, ray_head, "ReferenceWorker")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and [m["policy_version"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["faults/reference/restarts"] == 1 and metrics[0]["faults/reference/restarts"] == 0
    assert "reference worker died" in done.stdout
    for got, want in zip(metrics, clean_run):
        assert got["actor/kl"] == pytest.approx(want["actor/kl"], rel=1e-3, abs=1e-6), (got["step"], got, want)


def test_a_killed_learner_rank_restarts_its_group_from_the_checkpoint(tmp_path, ray_head, clean_run):
    """The group is started again, the newest complete checkpoint loaded and the steps after it redone: each step's
    final metrics are the uninterrupted run's, so no batch was lost or trained twice."""
    out = tmp_path / "run"
    proc = started_run(out, ray_head, steps=6, extra=TWO_RANKS, forked=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step_000002" / "trainer_state.json").is_file():  # the step-2 save is done
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    done = kill_role(proc, out, ray_head, "LearnerRank", count=2)
    assert done.returncode == 0, done.stderr[-3000:]
    redo = re.search(r"step (\d+): learner group 'actor' lost rank \d \(\w+\); restarted it \(1 of "
                     r"trainer.max_restarts=2\) from (.+): redoing steps? (\d+)", done.stdout)
    assert redo, done.stdout[-3000:]
    died, first_redone = int(redo[1]), int(redo[3])
    assert redo[2].endswith("checkpoints/step_000002") or redo[2].endswith("checkpoints/step_000004"), redo[0]
    assert first_redone == int(redo[2][-6:]) + 1 <= died
    # steps logged before the rank died (the one in progress maybe, if it died saving), then the redone ones
    steps = [m["step"] for m in read_jsonl(out / "metrics.jsonl")]
    assert steps[-(7 - first_redone):] == list(range(first_redone, 7))
    assert steps[:-(7 - first_redone)] in (list(range(1, died)), list(range(1, died + 1))), steps
    final = {m["step"]: m for m in read_jsonl(out / "metrics.jsonl")}  # a redone step's later record
    assert [final[s]["policy_version"] for s in range(1, 7)] == list(range(1, 7))
    assert final[6]["faults/actor/restarts"] == 1 and final[1]["faults/actor/restarts"] == 0
    for step, want in zip(range(1, 7), clean_run):
        for key in ("reward/mean", "actor/pg_loss", "actor/grad_norm", "actor/kl"):
            assert final[step][key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), (step, key, final[step], want)
