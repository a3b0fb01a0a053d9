"""``python -m launch.make_docs``: ``--help`` writes nothing, ``--out`` picks the file, ``--check`` only compares."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch import make_docs
from launch.make_docs import main, render_config_reference

REPO = Path(__file__).resolve().parents[1]

# Runs ``python -m launch.make_docs ARGS`` with an audit hook that refuses (and so reports) any file opened for
# writing inside the repository: a CLI that writes where it should not fails here without touching docs/config.md.
GUARDED = """
import os, runpy, sys
REPO = {repo!r}
WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
def guard(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE
        if writes and os.path.realpath(os.fsdecode(path)).startswith(REPO + os.sep):
            raise PermissionError(f"make_docs opened {{os.fsdecode(path)}} for writing")
sys.addaudithook(guard)
sys.argv = ["launch.make_docs", *sys.argv[1:]]
runpy.run_module("launch.make_docs", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def reference() -> str:
    return render_config_reference()


def test_help_prints_usage_and_writes_nothing():
    proc = subprocess.run([sys.executable, "-c", GUARDED.format(repo=str(REPO)), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: python -m launch.make_docs" in proc.stdout and "--check" in proc.stdout
    assert "--out" in proc.stdout and "wrote" not in proc.stdout


def test_out_writes_the_reference_there_and_nowhere_else(tmp_path, monkeypatch, capsys, reference):
    monkeypatch.setattr(make_docs, "DOC", tmp_path / "default.md")  # stands in for docs/config.md
    out = tmp_path / "sub" / "config.md"
    assert main(["--out", str(out)]) == 0
    assert out.read_text() == reference
    assert not (tmp_path / "default.md").exists()
    assert "wrote" in capsys.readouterr().out


def test_check_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path, monkeypatch, capsys, reference):
    monkeypatch.setattr(make_docs, "DOC", tmp_path / "default.md")
    stale = tmp_path / "stale.md"
    stale.write_text(reference.replace("# Config reference", "# Config reference (old)"))
    before = stale.read_text()
    assert main(["--check", "--out", str(stale)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stale.md is stale" in err[0] and "--out" in err[0], err
    assert stale.read_text() == before  # --check writes nothing

    fresh = tmp_path / "fresh.md"
    fresh.write_text(reference)
    assert main(["--check", "--out", str(fresh)]) == 0
    assert capsys.readouterr().err == ""

    assert main(["--check", "--out", str(tmp_path / "missing.md")]) == 1  # a missing file is not up to date
    assert not (tmp_path / "missing.md").exists()
    assert not (tmp_path / "default.md").exists()
