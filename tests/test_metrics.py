import io
import json
import struct
import sys

import pytest

from rlcore.config import ConfigError, load_config
from rlcore.metrics import LOGGERS, MetricsLogger, progress_bar


def test_progress_bar():
    assert progress_bar(5, 20, width=4) == "[#---] 5/20"


def test_logger_appends_jsonl_and_prints_one_line(tmp_path):
    out = io.StringIO()
    logger = MetricsLogger(tmp_path, total_steps=4, loggers=["console", "jsonl"], stream=out)
    logger.log(1, {"reward/mean": 0.25, "accuracy": 0.5, "time/step": 2.0})
    logger.log(2, {"reward/mean": 0.5, "accuracy": 0.75, "time/step": 2.0})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("step [##########----------] 2/4 reward 0.500 | acc 0.750")
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {"step": 1, "reward/mean": 0.25, "accuracy": 0.5, "time/step": 2.0}


@pytest.mark.parametrize("loggers", [[], ["console"], ["jsonl"], ["tensorboard"], ["console", "jsonl", "tensorboard"]])
def test_each_logger_writes_only_where_it_should(tmp_path, loggers):
    if "tensorboard" in loggers:
        pytest.importorskip("tensorboard")
    out = io.StringIO()
    logger = MetricsLogger(tmp_path, total_steps=2, loggers=loggers, stream=out)
    logger.log(1, {"reward/mean": 1.0})
    logger.log_samples(1, {"prompt_indices": [3]})
    logger.close()
    assert len(out.getvalue().splitlines()) == (1 if "console" in loggers else 0)
    assert (tmp_path / "metrics.jsonl").exists() == ("jsonl" in loggers)
    assert bool(list(tmp_path.glob("tensorboard/events.out.tfevents.*"))) == ("tensorboard" in loggers)
    assert json.loads((tmp_path / "rollouts.jsonl").read_text()) == {"step": 1, "prompt_indices": [3]}  # always


def test_missing_tensorboard_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it fails
    logger = MetricsLogger(tmp_path, total_steps=1, loggers=["jsonl", "tensorboard"], stream=io.StringIO())
    logger.log(1, {"reward/mean": 1.0})
    logger.close()
    assert (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "tensorboard").exists()
    assert "tensorboard package is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("make", [lambda: MetricsLogger("unused", 1, loggers=["console", "mlflow"]),
                                  lambda: load_config(None, ["trainer.loggers=[console,mlflow]"])])
def test_unknown_logger_is_a_config_error_naming_the_key(make):
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == f"trainer.loggers: 'mlflow' is not one of {', '.join(LOGGERS)}"


def test_wandb_without_the_package_fails_before_the_run(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else object())
    with pytest.raises(ConfigError, match="trainer.loggers has wandb but the wandb package is not installed"):
        load_config(None, ["trainer.loggers=[console,wandb]"])


def wandb_records(path) -> list:
    """The records (``wandb_internal_pb2.Record``) of an offline run's ``.wandb`` file.

    The file is a LevelDB-style log (a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte
    header: crc32, length, kind) of ``wandb_internal_pb2.Record`` protobufs; wandb no longer ships a reader.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, pos, record, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        record, pos = record + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(record))
            record = b""
    return records


def wandb_history(records) -> list[dict]:
    """The rows ``wandb.log`` wrote."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_under_the_output_dir(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))  # nothing under the real home
    out = tmp_path / "my-run"
    config = {"trainer": {"total_steps": 2}, "algorithm": {"name": "grpo"}}
    for steps in ([1, 2], [3]):  # the second logger is a resumed run: the same W&B run id
        logger = MetricsLogger(out, total_steps=3, loggers=["wandb"], config=config, stream=io.StringIO())
        for step in steps:
            logger.log(step, {"reward/mean": step / 4, "accuracy": 0.5})
        logger.close()
    wandb.teardown()  # the run files are written by wandb's service process; stopping it flushes them
    run_id = (out / "wandb" / "run_id").read_text().strip()
    # offline-run-<time>-<id>, with "-1" after it when the second starts within the same second
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all((run / f"run-{run_id}.wandb").is_file() for run in runs)
    first, resumed = (wandb_records(run / f"run-{run_id}.wandb") for run in runs)
    assert [(row["_step"], row["reward/mean"], row["accuracy"]) for row in wandb_history(first)] == \
        [(1, 0.25, 0.5), (2, 0.5, 0.5)]
    assert [(row["_step"], row["reward/mean"]) for row in wandb_history(resumed)] == [(3, 0.75)]
    run = next(r.run for r in first if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name, run.run_id) == ("rlcore", "my-run", run_id)
    assert {u.key: json.loads(u.value_json) for u in run.config.update if u.key in config} == config
    assert not (tmp_path / "metrics.jsonl").exists() and not (out / "metrics.jsonl").exists()
