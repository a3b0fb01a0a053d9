"""The end-to-end tests' stand-in for ``python`` (tests/zygote.py): a forked run answers as the interpreter would."""

import subprocess
import sys
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
