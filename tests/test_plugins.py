"""The documented plug-in examples (docs/rewards.md), run through the composition root without Ray."""

import sys
from pathlib import Path

import pytest

from launch.build import configure, prepare
from rewards.api import RewardSample, build_reward
from rlcore.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
TRANSFORM = "tests.plugins.user_transforms:Instruction"


def test_a_user_data_transform_with_options_changes_every_row(local_model, arithmetic_files, tmp_path):
    plan = configure(None, [f"model.path={local_model}", f"data.train_files=[{arithmetic_files[0]}]",
                            f"data.eval_files=[{arithmetic_files[1]}]", f"trainer.cache_dir={tmp_path}",
                            f"data.transforms=[{{name: '{TRANSFORM}', text: 'Add.', where: after}}]"])
    data = prepare(plan)
    first = data.train[0]
    assert first.prompt.endswith("= Add.") and first.metadata["instruction"] == "Add."
    assert all(row.prompt.endswith(" Add.") for row in data.train + data.eval)
    assert plan.cfg.data.transforms[0]["where"] == "after"


@pytest.mark.parametrize("node, message", [
    ("{name: '%s', wher: after}" % TRANSFORM, "unknown key 'data.transforms[0].wher'; allowed under "
                                              "'data.transforms[0]': text, where"),
    ("{name: '%s', where: inside}" % TRANSFORM, "data.transforms[0]: where='inside' is not one of before, after"),
    ("{name: nope}", "data.transforms[0].name='nope' is not a registered data transform; registered: length_target"),
])
def test_transform_option_errors_name_the_key(node, message):
    with pytest.raises(ConfigError) as info:
        configure(None, [f"data.transforms=[{node}]"])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_user_reward_with_options_gets_them_typed(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    sys.modules.pop("my_rewards", None)
    terms = "[{name: exact_match}, {name: 'my_rewards:CloseEnough', args: {tolerance: '3'}}]"
    term = configure(None, [f"reward.terms={terms}"]).reward_terms[1]
    assert term.args == {"tolerance": 3}  # '3' parsed into the option's int
    reward = build_reward(term.name, term.target, term.args)
    scores = reward.score([RewardSample("1+1=", "4", [4], "2"), RewardSample("1+1=", "x", [5], "2")])
    assert scores == [{"close": 0.5, "_parsed": 1.0}, {"close": 0.0, "_parsed": 0.0}]
    with pytest.raises(ConfigError, match=r"unknown key 'reward.terms\[1\].args.tolerence'; allowed under "
                                          r"'reward.terms\[1\].args': tolerance"):
        configure(None, ["reward.terms=[{name: exact_match}, {name: 'my_rewards:CloseEnough', args: {tolerence: 3}}]"])
