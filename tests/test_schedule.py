"""The learning-rate multiplier: warm-up, then constant, cosine or linear decay to the floor."""

import math

import pytest

from rlcore.config import ConfigError, load_config, validate
from rlcore.schedule import lr_multiplier


def test_warmup_then_constant():
    assert [lr_multiplier(k, 4, 10) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_multiplier(0, 0, 10) == 1.0


@pytest.mark.parametrize("schedule, middle", [("cosine", 0.5), ("linear", 0.5)])
def test_decays_from_one_after_warmup_to_the_floor_at_total(schedule, middle):
    f = [lr_multiplier(k, 2, 12, schedule, 0.2) for k in range(15)]
    assert f[:3] == [0.5, 1.0, 1.0]  # the decay starts where the warm-up ends
    assert f[7] == pytest.approx(0.2 + 0.8 * middle)  # half way: 5 of 10 decay steps
    assert f[12:] == [pytest.approx(0.2)] * 3  # at and past the last step: the floor
    assert all(a >= b for a, b in zip(f[1:], f[2:]))


def test_cosine_is_half_a_cosine():
    assert lr_multiplier(3, 0, 12, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_multiplier(3, 0, 12, "linear") == pytest.approx(0.75)


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="learner.lr_schedule='step' is not one of constant, cosine, linear"):
        validate(load_config(None, ["learner.lr_schedule=step"]))
    with pytest.raises(ConfigError, match=r"learner.min_lr_ratio=1.5 must be in \[0, 1\]"):
        validate(load_config(None, ["learner.min_lr_ratio=1.5"]))
