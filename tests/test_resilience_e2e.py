"""Real runs through faults: a signal stops a run after its step with a checkpoint and one line on how to resume;
a rollout worker killed mid-run is replaced and its share generated again, no step lost or trained twice."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_e2e import PRESET, REPO, SMALL, read_jsonl, venv_env

pytestmark = pytest.mark.slow


def started_run(out: Path, steps: int = 200) -> subprocess.Popen:
    """A GRPO run in its own process group (as a terminal starts a command), once it has logged two steps."""
    proc = subprocess.Popen([sys.executable, "-m", "launch.train", "--config", PRESET, *SMALL,
                             f"trainer.total_steps={steps}", "trainer.save_every=0", "trainer.export=false",
                             f"trainer.output_dir={out}"], cwd=REPO, env=venv_env(), stdout=subprocess.PIPE,
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
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_one_line(tmp_path, signum, to_group):
    out = tmp_path / "run"
    proc = started_run(out)
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


def kill_role(proc: subprocess.Popen, role: str) -> subprocess.CompletedProcess:
    """``kill -9`` the one actor process of ``role`` in the run's session; the run's output once it ends."""
    found = subprocess.run(["pgrep", "-f", f"ray::{role}", "-s", str(proc.pid)], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    assert len(pids) == 1, found
    os.kill(pids[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_a_killed_rollout_worker_is_replaced_and_no_step_is_lost(tmp_path):
    out = tmp_path / "run"
    done = kill_role(started_run(out, steps=8), "RolloutWorker")
    stdout, stderr, proc = done.stdout, done.stderr, done
    assert proc.returncode == 0, stderr[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 9))  # every step once
    assert [m["policy_version"] for m in metrics] == list(range(1, 9))  # each trained once
    # killed while generating (its share generated again) or between two calls (replaced at the weight sync)
    assert metrics[-1]["faults/rollout/restarts"] == 1 and metrics[0]["faults/rollout/restarts"] == 0
    assert "rollout worker 0 died" in stdout
    # the replacement samples with the newest weights: the learner's log-probs of its samples match vLLM's
    assert max(m["actor/rollout_gap/abs_diff_mean"] for m in metrics) < 1e-3, [
        m["actor/rollout_gap/abs_diff_mean"] for m in metrics]


def test_a_killed_reference_worker_is_replaced_and_no_step_is_lost(tmp_path):
    """The replacement is the same frozen policy: every step's KL to it is the uninterrupted run's."""
    clean = tmp_path / "clean"
    proc = subprocess.run([sys.executable, "-m", "launch.train", "--config", PRESET, *SMALL, "trainer.total_steps=4",
                           "trainer.save_every=0", "trainer.export=false", f"trainer.output_dir={clean}"],
                          cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    done = kill_role(started_run(out, steps=4), "ReferenceWorker")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics, expected = read_jsonl(out / "metrics.jsonl"), read_jsonl(clean / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and [m["policy_version"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["faults/reference/restarts"] == 1 and metrics[0]["faults/reference/restarts"] == 0
    assert "reference worker died" in done.stdout
    for got, want in zip(metrics, expected):
        assert got["actor/kl"] == pytest.approx(want["actor/kl"], rel=1e-3, abs=1e-6), (got["step"], got, want)
