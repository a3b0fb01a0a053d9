import io
import json

from rlcore.metrics import MetricsLogger, progress_bar


def test_progress_bar():
    assert progress_bar(5, 20, width=4) == "[#---] 5/20"


def test_logger_appends_jsonl_and_prints_one_line(tmp_path):
    out = io.StringIO()
    logger = MetricsLogger(tmp_path, total_steps=4, tensorboard=False, stream=out)
    logger.log(1, {"reward/mean": 0.25, "accuracy": 0.5, "time/step": 2.0})
    logger.log(2, {"reward/mean": 0.5, "accuracy": 0.75, "time/step": 2.0})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("step [##########----------] 2/4 reward 0.500 | acc 0.750")
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {"step": 1, "reward/mean": 0.25, "accuracy": 0.5, "time/step": 2.0}


def test_tensorboard_when_installed(tmp_path):
    import pytest

    pytest.importorskip("tensorboard")
    logger = MetricsLogger(tmp_path, total_steps=1, tensorboard=True, stream=io.StringIO())
    logger.log(1, {"reward/mean": 1.0})
    logger.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
