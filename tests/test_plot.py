import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.plot import Panel, main, panels, read_metrics

REPO = Path(__file__).resolve().parents[1]

GRPO_KEYS = ["reward/mean", "reward/std", "reward/exact_match", "reward/length", "accuracy", "eval/accuracy",
             "response_length/mean", "response_length/max", "actor/kl", "actor/entropy", "actor/pg_loss",
             "actor/grad_norm", "time/rollout", "time/actor", "time/eval", "time/step", "time/startup",
             "throughput/tokens_per_s", "policy_version"]


def test_panels_for_a_grpo_run():
    assert panels(GRPO_KEYS) == [
        Panel("reward", ("reward/mean", "reward/exact_match", "reward/length")),  # not reward/std: not a term
        Panel("accuracy", ("accuracy", "eval/accuracy")),
        Panel("response length (tokens)", ("response_length/mean",)),
        Panel("KL to the reference", ("actor/kl",)),
        Panel("entropy", ("actor/entropy",)),
        Panel("loss", ("actor/pg_loss",)),
        Panel("time per step (s)", ("time/actor", "time/eval", "time/rollout", "time/step")),
    ]


def test_panels_for_an_sft_run_leave_out_the_absent_ones():
    keys = ["actor/sft_loss", "eval/loss", "actor/grad_norm", "response_length/thinking_mean", "time/actor"]
    assert panels(keys) == [
        Panel("response length (tokens)", ("response_length/thinking_mean",)),
        Panel("loss", ("actor/sft_loss", "eval/loss")),
        Panel("time per step (s)", ("time/actor",)),
    ]
    assert panels([]) == []


def write_run(run_dir, steps):
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(steps + 1):
        row = {"step": step, "eval/accuracy": 0.3 + step / 100} if step % 5 == 0 else {"step": step}
        if step:
            row.update({"reward/mean": step / steps, "reward/exact_match": step / steps, "accuracy": step / steps,
                        "response_length/mean": 10.0 - step / 2, "actor/kl": step / 100, "actor/entropy": 1 - step / 20,
                        "actor/pg_loss": 0.01, "time/rollout": 0.5, "time/actor": 1.0, "time/step": 1.6})
        lines.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 11, "rew')  # a line being written


def test_read_metrics_merges_a_step_logged_twice_and_skips_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "a": 1.0}\n{"step": 1, "a": 0.5}\n{"step": 2, "a": 3.0, "b": 1.0}\n{"step": 3, "a')
    assert read_metrics(path) == {1: {"a": 0.5}, 2: {"a": 3.0, "b": 1.0}}


def test_plot_writes_a_png_of_one_or_several_runs(tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image")
    write_run(tmp_path / "run-a", steps=10)
    assert main([str(tmp_path / "run-a")]) == 0
    default = tmp_path / "run-a" / "curves.png"
    assert capsys.readouterr().out.strip() == str(default)
    assert image.imread(default).shape[:2] == (4 * 340, 2 * 650)  # 7 panels in 2 columns, 100 dpi
    write_run(tmp_path / "run-b", steps=6)
    out = tmp_path / "figures" / "both.png"
    assert main([str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--out", str(out)]) == 0
    assert image.imread(out).ndim == 3


@pytest.mark.parametrize("content", [None, "", '{"step": 1, "rew'])
def test_a_missing_or_empty_metrics_file_exits_2_naming_it(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"plot error: {tmp_path / 'metrics.jsonl'}: ")
    assert not (tmp_path / "curves.png").exists()


def test_the_command_line_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.plot", str(tmp_path / "nowhere")], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr == f"plot error: {tmp_path / 'nowhere' / 'metrics.jsonl'}: no such file " \
                          "(was the run's trainer.loggers without jsonl?)\n"
