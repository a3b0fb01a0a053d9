"""SIGINT and SIGTERM stop a real run after its step in progress, with a checkpoint and one line on how to resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_e2e import PRESET, REPO, SMALL, read_jsonl, venv_env

pytestmark = pytest.mark.slow


def started_run(out: Path) -> subprocess.Popen:
    """A long GRPO run in its own process group (as a terminal starts a command), once it has logged two steps."""
    proc = subprocess.Popen([sys.executable, "-m", "launch.train", "--config", PRESET, *SMALL,
                             "trainer.total_steps=200", "trainer.save_every=0", "trainer.export=false",
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
