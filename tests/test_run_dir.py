"""Output folders: one driver at a time, no earlier result mixed up or lost, damaged checkpoints passed over."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launch import run_dir as rd
from launch.checkpoints import FILES, STATE_FILE, CheckpointError, Checkpoints, damage
from launch.evaluate import OUTPUTS as EVALUATE
from launch.train import main
from rlcore.config import ConfigError, load_config
from rlcore.metrics import keep_through

REPO = Path(__file__).resolve().parents[1]


def config(out: Path, *overrides: str):
    return load_config(None, [f"trainer.output_dir={out}", *overrides])


def earlier_run(out: Path) -> Path:
    """A folder holding what a finished 2-step run leaves, and a file of the user's own."""
    (out / "checkpoints" / "step_000002").mkdir(parents=True)
    (out / "checkpoints" / "step_000002" / STATE_FILE).write_text('{"step": 2}')
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (out / "config.yaml").write_text("old: true\n")
    (out / "notes.txt").write_text("mine")
    return out


def test_a_fresh_run_into_a_used_folder_is_refused_naming_the_ways_on(tmp_path):
    out = earlier_run(tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        rd.claim(config(out), rd.TRAIN)
    assert str(refused.value) == (
        f"trainer.output_dir={out} already holds the results of an earlier launch.train (metrics.jsonl, "
        "checkpoints): continue it with trainer.resume=true, choose a new trainer.output_dir, or delete them and "
        "start afresh with trainer.overwrite=true")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert rd.holder(out) is None  # refused: the lock is given back


def test_resume_continues_and_overwrite_deletes_only_the_runs_files(tmp_path, capsys):
    out = earlier_run(tmp_path / "run")
    rd.claim(config(out, "trainer.resume=true"), rd.TRAIN).release()
    assert (out / "metrics.jsonl").exists()
    rd.claim(config(out, "trainer.overwrite=true"), rd.TRAIN).release()
    assert sorted(p.name for p in out.iterdir()) == [rd.LOCK, "notes.txt"]
    assert capsys.readouterr().out == (f"trainer.overwrite=true: deleted the earlier results in {out} "
                                       "(metrics.jsonl, checkpoints)\n")
    with pytest.raises(ConfigError, match="^trainer.resume=true and trainer.overwrite=true: "):
        rd.claim(config(out, "trainer.resume=true", "trainer.overwrite=true"), rd.TRAIN)


def test_what_a_failed_start_leaves_is_no_earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("x: 1\n")
    (out / "checkpoints").mkdir()  # empty
    rd.claim(config(out), rd.TRAIN).release()


def test_an_evaluation_is_refused_over_an_earlier_one_but_not_beside_a_training_run(tmp_path):
    out = earlier_run(tmp_path / "run")
    rd.claim(config(out), EVALUATE).release()  # the training run's files are not an evaluation's
    (out / "eval_results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"earlier launch.evaluate \(eval_results.json\): choose a new "
                                          r"trainer.output_dir, or delete them and start afresh with "):
        rd.claim(config(out, "trainer.resume=true"), EVALUATE)  # resume means nothing to an evaluation


def test_a_second_driver_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = rd.claim(config(out), rd.TRAIN)
    with pytest.raises(ConfigError) as refused:
        rd.claim(config(out), EVALUATE)
    line = str(refused.value)
    assert line.startswith(f"trainer.output_dir={out} is in use by another driver (launch.train pid {os.getpid()} "
                           f"on {socket.gethostname()}, since ")
    assert line.endswith("); wait for it to end or choose another trainer.output_dir")
    assert rd.holder(out)["pid"] == os.getpid()
    first.release()
    assert rd.holder(out) is None
    rd.claim(config(out), rd.TRAIN).release()


def test_a_killed_driver_leaves_no_lock_that_blocks_the_next(tmp_path):
    out = tmp_path / "run"
    code = (f"from pathlib import Path; from launch.run_dir import lock; lock(Path({str(out)!r}), 'launch.train'); "
            "print('locked', flush=True); import time; time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        assert rd.holder(out)["pid"] == proc.pid
        with pytest.raises(ConfigError, match=f"in use by another driver \\(launch.train pid {proc.pid} "):
            rd.claim(config(out), rd.TRAIN)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / rd.LOCK).exists() and rd.holder(out) is None
    rd.claim(config(out), rd.TRAIN).release()


def test_the_cli_refuses_a_used_folder_in_one_line_before_ray_starts(tmp_path, capsys, local_model):
    out = earlier_run(tmp_path / "run")
    assert main([f"model.path={local_model}", f"trainer.output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"config error: trainer.output_dir={out} already holds the results of an earlier "
                                "launch.train (metrics.jsonl, checkpoints): continue it with trainer.resume=true, "
                                "choose a new trainer.output_dir, or delete them and start afresh with "
                                "trainer.overwrite=true"]
    assert (out / "config.yaml").read_text() == "old: true\n"
    import ray

    assert not ray.is_initialized()


# --- checkpoints ---------------------------------------------------------------------------------


class FileGroup:
    """Saves two files the way a learner group's ranks do; loading fails on a file that is not what it saved."""

    def __init__(self):
        self.loaded = []

    def save_checkpoint(self, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "__0_0.distcp").write_bytes(b"w" * 100)
        (Path(path) / ".metadata").write_bytes(b"m" * 10)

    def load_checkpoint(self, path):
        if (Path(path) / ".metadata").read_bytes() != b"m" * 10:
            raise RuntimeError("unpickling failed\nEOFError: Ran out of input")
        self.loaded.append(Path(path).parent.name)


@pytest.fixture
def saved(tmp_path):
    group = FileGroup()
    checkpoints = Checkpoints(tmp_path, {"actor": group}, keep=3)
    for step in (2, 4, 6):
        checkpoints.save(step, {"policy_version": step})
    return checkpoints, group


def test_the_state_file_lists_every_file_with_its_size(saved, tmp_path):
    state = json.loads((tmp_path / "step_000006" / STATE_FILE).read_text())
    assert state[FILES] == {"actor/.metadata": 10, "actor/__0_0.distcp": 100}


@pytest.mark.parametrize("harm, reason", [
    (lambda p: (p / "actor" / "__0_0.distcp").unlink(), "actor/__0_0.distcp is missing"),
    (lambda p: (p / "actor" / "__0_0.distcp").write_bytes(b"w" * 40), "actor/__0_0.distcp has 40 bytes, 100 were saved"),
    (lambda p: (p / STATE_FILE).write_text('{"step": 6, "pol'), f"{STATE_FILE} is not readable JSON"),
    (lambda p: (p / STATE_FILE).unlink(), f"no {STATE_FILE} (its save did not finish)"),
])
def test_a_damaged_checkpoint_is_passed_over_with_one_line(saved, tmp_path, capsys, harm, reason):
    checkpoints, group = saved
    harm(tmp_path / "step_000006")
    assert damage(tmp_path / "step_000006") == reason
    path, state = checkpoints.restore()
    assert path.name == "step_000004" and state == {"step": 4, "policy_version": 4}
    assert group.loaded == ["step_000004"]
    assert capsys.readouterr().out == f"checkpoint {tmp_path / 'step_000006'} is damaged, passed over: {reason}\n"
    checkpoints.save(8, {"policy_version": 8})  # the next save removes the damaged one it supersedes
    assert [p.name for p in checkpoints.folders()] == ["step_000002", "step_000004", "step_000008"]


def test_a_checkpoint_that_fails_to_load_is_passed_over_too(saved, tmp_path, capsys):
    checkpoints, group = saved
    (tmp_path / "step_000006" / "actor" / ".metadata").write_bytes(b"x" * 10)  # same size, other bytes
    path, _ = checkpoints.restore()
    assert path.name == "step_000004"
    assert capsys.readouterr().out == (f"checkpoint {tmp_path / 'step_000006'} is damaged, passed over: loading it "
                                       "failed: RuntimeError: EOFError: Ran out of input\n")


def test_no_complete_checkpoint_left_is_one_error_naming_each(saved, tmp_path):
    checkpoints, _ = saved
    for step in (2, 4, 6):
        (tmp_path / f"step_{step:06d}" / "actor" / ".metadata").unlink()
    with pytest.raises(CheckpointError) as none:
        checkpoints.check()
    assert str(none.value) == (f"no complete checkpoint in {tmp_path}: step_000006: actor/.metadata is missing; "
                               "step_000004: actor/.metadata is missing; step_000002: actor/.metadata is missing")
    with pytest.raises(CheckpointError):
        checkpoints.restore()
    Checkpoints(tmp_path / "none", {}, keep=1).check()  # no checkpoint at all is not an error


def test_a_learner_that_dies_while_loading_is_not_the_checkpoints_fault(saved, tmp_path):
    checkpoints, group = saved

    class Died(RuntimeError):
        pass

    def die(path):
        raise Died("rank 1")

    group.load_checkpoint = die
    checkpoints.fatal = (Died,)
    with pytest.raises(Died):
        checkpoints.restore()


def test_a_resumed_run_keeps_the_records_up_to_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 1, "late": 1}\n{"step": 4, "cut')
    keep_through(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 1, "late": 1}\n'
    keep_through(tmp_path / "absent.jsonl", 2)
    assert not (tmp_path / "absent.jsonl").exists()
