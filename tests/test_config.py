import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.config import Config, ConfigError, field_docs, load_config

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "launch" / "configs").glob("*.yaml"))


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.algorithm.name == "grpo"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load(preset):
    load_config(preset)


def test_overrides_win_over_preset():
    cfg = load_config(PRESETS[0], ["trainer.total_steps=20", "rollout.num_workers=2", "learner.lr=3e-4"])
    assert (cfg.trainer.total_steps, cfg.rollout.num_workers, cfg.learner.lr) == (20, 2, 3e-4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.bogus=1"], "unknown key 'trainer.bogus'; allowed under 'trainer': total_steps"),
        (["bogus.x=1"], "unknown key 'bogus'; allowed sections: model, data"),
        (["trainer.total_steps=abc"], "trainer.total_steps: Value 'abc' of type 'str' could not be converted to Integer"),
        (["algorithm.mini_batch_size=48"], "algorithm.mini_batch_size=48 must divide data.prompts_per_step × rollout.n = 256"),
        (["learner.world_size=3"], "must be divisible by learner.world_size=3"),
        (["rollout.n=1"], "rollout.n=1: GRPO compares samples within a group"),
        (["algorithm.name=nope"], "algorithm.name='nope' is not registered; registered: dpo, grpo, online_dpo, ppo"),
        (["algorithm.kl_kind=k9"], "algorithm.kl_kind='k9' is not one of k1, k2, k3, abs"),
        (["algorithm.loss_agg=sum"], "algorithm.loss_agg='sum' is not one of token-mean"),
        (["model.dtype=int8"], "model.dtype='int8' is not one of float32, bfloat16, float16"),
        (["reward.terms=[{name: nope}]"], "reward.terms[0].name: unknown reward 'nope'"),
        (["reward.accuracy_term=other"], "reward.accuracy_term='other' is not among reward.terms: exact_match"),
        (["reference.enabled=false"], "algorithm.kl_coef=0.001 needs reference.enabled=true"),
        (["trainer.total_steps=0"], "trainer.total_steps=0 must be > 0"),
        (["data.prompts_per_step=2", "rollout.num_workers=4", "algorithm.mini_batch_size=16"], "leaves some of rollout.num_workers=4 idle"),
        (["nonsense"], "override 'nonsense' is not key=value"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_cli_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "launch.train", "trainer.total_stepz=3"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "config error: unknown key 'trainer.total_stepz'; allowed under 'trainer': total_steps, output_dir, seed, "
        "eval_every, save_every, keep_checkpoints, resume, export, tensorboard, cache_dir"]


def test_cli_missing_model_path_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.train", f"model.path={tmp_path}/missing"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"input error: model.path: path not found: {tmp_path}/missing"


def test_every_field_has_a_docstring():
    missing = [f"{section}.{name}" for section, rows in field_docs().items() for name, _, _, doc in rows if not doc]
    assert missing == []


def test_config_reference_is_up_to_date():
    from launch.make_docs import render_config_reference

    assert (REPO / "docs" / "config.md").read_text() == render_config_reference(), \
        "docs/config.md is stale: run python -m launch.make_docs"


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  total_steps: 1\n  total_steps: 2\n")
    with pytest.raises(ConfigError, match=f"{bad}: not a valid YAML config"):
        load_config(bad)
