"""Tests for the rule-based rewards in ``rewards``: true positives, false positives, malformed input."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rewards import (
    REWARDS,
    answer_match,
    exact_match,
    extract_answer,
    language_consistency,
    math_accuracy,
    numeric_match,
    r1_format,
    r1_tag_count,
)
from rewards.api import load_reward
from rewards.env import env_return
from rewards.judge import LLMJudge
from rewards.l1 import L1Reward
from rlcore.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


# A reward defined here so the registry can resolve it by import path.
def length_reward(prompt: str, response: str, ground_truth: str, scale: float = 1.0) -> float:
    return scale * len(response)


NOT_CALLABLE = 42


# --- package import ------------------------------------------------------------------


def test_import_is_light():
    # A fresh interpreter: this test process may already have imported math_verify.
    code = (
        "import sys, rewards; "
        "heavy = [m for m in ('math_verify', 'sympy', 'torch', 'ray', 'vllm') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# --- exact_match / numeric_match -----------------------------------------------------


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        ("47", "47", 1.0),
        (" 47\n", "47", 1.0),
        ("47", " 47 ", 1.0),
        ("\t-3 ", "-3", 1.0),
        ("48", "47", 0.0),
        ("4 7", "47", 0.0),
        ("047", "47", 0.0),
        ("47.0", "47", 0.0),  # strings, not numbers
        ("", "47", 0.0),
        ("   ", "47", 0.0),
    ],
)
def test_exact_match(response, truth, expected):
    assert exact_match("37+10=", response, truth) == expected


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        ("47", "47", 1.0),
        ("47.0", "47", 1.0),
        (" 47 \n", "47", 1.0),
        ("1e-7", "0", 1.0),  # absolute bound 1e-6 when |b| <= 1
        ("1000000.5", "1000000", 1.0),  # relative bound 1e-6 * 1e6 = 1
        ("1000002", "1000000", 0.0),
        ("0.00001", "0", 0.0),
        ("48", "47", 0.0),
        ("-47", "47", 0.0),
        ("abc", "47", 0.0),
        ("", "47", 0.0),
        ("47 apples", "47", 0.0),
        ("47", "n/a", 0.0),
        ("nan", "nan", 0.0),
        ("inf", "inf", 0.0),
    ],
)
def test_numeric_match(response, truth, expected):
    assert numeric_match("", response, truth) == expected


def test_numeric_match_tolerance_arg():
    assert numeric_match("", "47.4", "47", tolerance=0.01) == 1.0  # 0.4 <= 0.47
    assert numeric_match("", "47.5", "47", tolerance=0.01) == 0.0  # 0.5 > 0.47


# --- extract_answer / r1_format ------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>x</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("<answer>line1\nline2</answer>", "line1\nline2"),
        ("<answer></answer>", ""),
        ("<answer>a<answer>b</answer>", "b"),
        ("no tags at all", None),
        ("<answer>unclosed", None),
        ("", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
        ("<think>a\nb</think>\n\n<answer>\n4\n</answer>", 1.0),
        ("  <think>x</think> <answer>4</answer>\n", 1.0),
        ("<answer>4</answer>", 0.0),  # missing think
        ("<think>x</think>", 0.0),  # missing answer
        ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),  # two answers
        ("<think>x</think><think>y</think><answer>4</answer>", 0.0),  # two thinks
        ("<think>x</think><answer>4</answer> so 4", 0.0),  # text after answer
        ("Sure! <think>x</think><answer>4</answer>", 0.0),  # text before think
        ("<think>x</think> and <answer>4</answer>", 0.0),  # text between
        ("<answer>4</answer><think>x</think>", 0.0),  # wrong order
        ("<think>x<answer>4</answer></think>", 0.0),  # nested
        ("", 0.0),
    ],
)
def test_r1_format(response, expected):
    assert r1_format("", response, "4") == expected


# --- math_accuracy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        ("<think>half</think><answer>\\frac{1}{2}</answer>", "0.5", 1.0),
        ("\\boxed{3}", "3", 1.0),
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", 1.0),
        ("first \\boxed{2}, no wait \\boxed{3}", "3", 1.0),  # last box wins
        ("<answer>\\sqrt{2}</answer>", "\\sqrt{2}", 1.0),  # bare LaTeX, retried as $...$
        ("<answer>$x^2+1$</answer>", "1+x^2", 1.0),
        ("<answer>2</answer> ... <answer>3</answer>", "3", 1.0),  # last answer block wins
        ("The answer is 3", "3", 1.0),  # no tags, no box: whole response
        ("<answer>4</answer>", "3", 0.0),
        ("<think>it is 3</think><answer>4</answer>", "3", 0.0),  # answer tag beats reasoning
        ("\\boxed{4}", "3", 0.0),
        ("<answer>0.51</answer>", "0.5", 0.0),
        ("asdf qwer", "3", 0.0),
        ("", "3", 0.0),
        ("<answer></answer>", "3", 0.0),
        ("<answer>}{\\frac{</answer>", "3", 0.0),
        ("\\boxed{3", "3", 0.0),  # unbalanced box: nothing math-verify can read
        ("<answer>x^2+1</answer>", "1+x^2", 1.0),
        ("<answer>2\\pi</answer>", "2\\pi", 1.0),
        ("<answer>\\frac{1}{2}</answer>", "$\\frac{1}{2}$", 1.0),  # gold already delimited
        # Bare gold parsed as plain text would read as a prefix (1, 2, 3): must not match.
        ("<answer>1</answer>", "1+x^2", 0.0),
        ("<answer>2</answer>", "2\\pi", 0.0),
        ("<answer>3</answer>", "2, 3", 0.0),
        ("<answer>3</answer>", "", 0.0),  # empty gold never matches
    ],
)
def test_math_accuracy(response, truth, expected):
    assert math_accuracy("", response, truth) == expected


def test_math_accuracy_off_main_thread():
    # Ray actor methods may run in worker threads, where signal.alarm raises ValueError;
    # math_accuracy must still work there (it disables math-verify's signal timeouts).
    results: dict[str, object] = {}

    def work():
        try:
            results["right"] = math_accuracy("", "<answer>\\frac{1}{2}</answer>", "0.5")
            results["wrong"] = math_accuracy("", "<answer>4</answer>", "3")
        except BaseException as exc:  # noqa: BLE001 - surface anything to the main thread
            results["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "error" not in results, results.get("error")
    assert results == {"right": 1.0, "wrong": 0.0}


def test_math_verify_defaults_fail_off_main_thread():
    # Guards the premise of the test above: with its default timeouts math-verify
    # cannot parse off the main thread, so a 1.0 there proves the timeouts are off.
    from math_verify import parse

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: parse("1")))
    thread.start()
    thread.join(timeout=30)
    assert errors and isinstance(errors[0], ValueError)


def _capture(errors: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)


# --- registry ------------------------------------------------------------------------

BUILTIN_NAMES = ("answer_match, confidence, env_return, exact_match, genrm, judge, l1, language_consistency, math_accuracy, numeric_match, orm, prm, "
                 "r1_format, r1_tag_count, reasoning_gym")


def resolve_reward(name: str):
    return REWARDS.resolve(name, "reward.terms[0].name")


def test_builtin_rewards():
    from rewards.confidence import PolicyConfidence
    from rewards.generative_verifier import GenerativeVerifier
    from rewards.reasoning_gym import ReasoningGymScore
    from rewards.reward_model import OutcomeRewardModel, ProcessRewardModel

    assert REWARDS.entries == {
        "exact_match": exact_match,
        "numeric_match": numeric_match,
        "math_accuracy": math_accuracy,
        "answer_match": answer_match,
        "r1_format": r1_format,
        "r1_tag_count": r1_tag_count,
        "language_consistency": language_consistency,
        "l1": L1Reward,
        "judge": LLMJudge,
        "orm": OutcomeRewardModel,
        "prm": ProcessRewardModel,
        "confidence": PolicyConfidence,
        "genrm": GenerativeVerifier,
        "env_return": env_return,
        "reasoning_gym": ReasoningGymScore,
    }
    for name, fn in REWARDS.entries.items():
        assert resolve_reward(name) is fn
    assert ", ".join(REWARDS.names()) == BUILTIN_NAMES


def test_resolve_import_path():
    fn = resolve_reward(f"{__name__}:length_reward")
    assert fn is length_reward
    assert resolve_reward("rewards.arithmetic:exact_match") is exact_match
    assert load_reward(f"{__name__}:length_reward", {"scale": 2.0}).score([_sample("abc")]) == [6.0]


def _sample(response: str):
    from rewards.api import RewardSample

    return RewardSample("p", response, [1], "")


def _error(name: str) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_reward(name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"reward.terms[0].name='{name}'")  # names the key and the value
    return message


def test_resolve_unknown_name():
    message = _error("foo")
    # The error lists the built-in names, and says how to name anything else.
    assert message == (f"reward.terms[0].name='foo' is not a registered reward; registered: {BUILTIN_NAMES} "
                       "(or give an import path 'module:function')")


def test_resolve_missing_module():
    message = _error("no_such_pkg_xyz.mod:fn")
    assert "no module named 'no_such_pkg_xyz.mod'" in message


def test_resolve_missing_attribute():
    message = _error(f"{__name__}:no_such_fn")
    assert f"module '{__name__}' has no attribute 'no_such_fn'" in message


def test_resolve_not_callable():
    assert resolve_reward(f"{__name__}:NOT_CALLABLE") == 42  # resolving finds it; building it refuses
    with pytest.raises(ValueError, match=f"reward '{__name__}:NOT_CALLABLE' is not callable"):
        load_reward(f"{__name__}:NOT_CALLABLE")


@pytest.mark.parametrize("name, problem", [(":fn", "expected an import path 'module:attr'"),
                                           ("rewards.arithmetic:", "expected an import path 'module:attr'"),
                                           ("", "is not a registered reward")])
def test_resolve_malformed(name, problem):
    assert problem in _error(name)


def test_importing_a_broken_module_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_reward_mod.py").write_text("raise RuntimeError('line one\\nline two')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _error("broken_reward_mod:fn")
    assert "importing 'broken_reward_mod' failed: line one line two" in message
