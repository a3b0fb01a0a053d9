"""The end-to-end tests' stand-in for ``python`` (tests/zygote.py): a forked run answers as the interpreter would."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.zygote import python

pytestmark = pytest.mark.slow  # a check of the slow tests' tool

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["--help"], ["trainer.bogus=1"], ["model.path=/nowhere/model"]],
                         ids=["help", "config error", "input error"])
def test_a_forked_run_has_the_interpreters_output_and_exit_code(tmp_path, args):
    args = [*args, f"trainer.output_dir={tmp_path / 'out'}"] if args != ["--help"] else args
    runs = [subprocess.run([exe, "-m", "launch.train", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
            for exe in (sys.executable, python())]
    real, forked = ((r.returncode, r.stdout, r.stderr.strip().splitlines()[-1:]) for r in runs)
    assert forked == real and real[0] in (0, 2), runs


def test_the_run_gets_the_callers_folder_environment_and_path(tmp_path):
    (tmp_path / "where.py").write_text("import os, sys\nprint(os.getcwd(), os.environ['MARK'], sys.argv[1:])\n"
                                       "raise SystemExit(3)\n")
    proc = subprocess.run([python(), "-m", "where", "a", "b"], cwd=tmp_path, env={"MARK": "x", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, f"{tmp_path} x ['a', 'b']\n"), proc.stderr


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (the server may reap it while its state is read)."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False


def test_signals_reach_the_run_and_a_killed_caller_takes_its_run_along(tmp_path):
    (tmp_path / "sleeper.py").write_text("import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\n"
                                         "time.sleep(120)\n")

    def started(name: str) -> tuple[subprocess.Popen, int]:
        pid_file = tmp_path / name
        proc = subprocess.Popen([python(), "-m", "sleeper", str(pid_file)], cwd=tmp_path)
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        return proc, int(pid_file.read_text())

    proc, run = started("a")
    assert run != proc.pid  # forked by the server, not the caller itself
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # the run died of it, and so reports the caller
    proc, run = started("b")
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while alive(run):
        assert time.monotonic() < deadline, "the run outlived its killed caller"
        time.sleep(0.05)
    proc, run = started("c")  # the server serves on
    assert run != proc.pid
    proc.kill()
