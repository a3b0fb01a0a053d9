"""Tests for the rule-based rewards in ``rewards``: true positives, false positives, malformed input."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rewards.judge import LLMJudge
from rewards.l1 import L1Reward
from rewards import (
    BUILTIN_REWARDS,
    CompositeReward,
    RewardTerm,
    exact_match,
    extract_answer,
    language_consistency,
    math_accuracy,
    numeric_match,
    r1_format,
    r1_tag_count,
    resolve_reward,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


# A reward defined here so the registry can resolve it by import path.
def length_reward(prompt: str, response: str, ground_truth: str, scale: float = 1.0) -> float:
    return scale * len(response)


def failing_reward(prompt: str, response: str, ground_truth: str) -> float:
    if response == "boom":
        raise ZeroDivisionError("kaboom")
    return 1.0


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


def test_builtin_rewards():
    assert BUILTIN_REWARDS == {
        "exact_match": exact_match,
        "numeric_match": numeric_match,
        "math_accuracy": math_accuracy,
        "r1_format": r1_format,
        "r1_tag_count": r1_tag_count,
        "language_consistency": language_consistency,
        "l1": L1Reward,
        "judge": LLMJudge,
    }
    for name, fn in BUILTIN_REWARDS.items():
        assert resolve_reward(name) is fn


def test_resolve_import_path():
    fn = resolve_reward(f"{__name__}:length_reward")
    assert fn is length_reward
    assert resolve_reward("rewards.arithmetic:exact_match") is exact_match


def _error(name: str) -> str:
    with pytest.raises(ValueError) as info:
        resolve_reward(name)
    message = str(info.value)
    assert "\n" not in message
    # Every error lists the built-in names.
    assert "exact_match, judge, l1, language_consistency, math_accuracy, numeric_match, r1_format, r1_tag_count" in message
    assert "'module:function'" in message
    return message


def test_resolve_unknown_name():
    assert _error("foo").startswith("unknown reward 'foo': use one of exact_match, judge, l1, language_consistency")


def test_resolve_missing_module():
    message = _error("no_such_pkg_xyz.mod:fn")
    assert "no module named 'no_such_pkg_xyz.mod'" in message


def test_resolve_missing_attribute():
    message = _error(f"{__name__}:no_such_fn")
    assert f"module '{__name__}' has no attribute 'no_such_fn'" in message


def test_resolve_not_callable():
    assert "is not callable" in _error(f"{__name__}:NOT_CALLABLE")


@pytest.mark.parametrize("name", [":fn", "rewards.arithmetic:", ""])
def test_resolve_malformed(name):
    _error(name)


# --- composite -----------------------------------------------------------------------


def test_composite_weighting_and_breakdown():
    reward = CompositeReward(
        [
            RewardTerm("exact_match", exact_match, 1.0, {}),
            RewardTerm("r1_format", r1_format, 0.5, {}),
            RewardTerm("length", length_reward, -0.1, {"scale": 2.0}),
        ]
    )
    responses = ["4", "<think>t</think><answer>4</answer>", "5"]
    totals, breakdown = reward.score(["2+2="] * 3, responses, ["4"] * 3)
    # Unweighted per term: exact [1, 0, 0]; format [0, 1, 0]; length 2*len -> [2, 68, 2].
    assert breakdown == {
        "exact_match": [1.0, 0.0, 0.0],
        "r1_format": [0.0, 1.0, 0.0],
        "length": [2.0, 68.0, 2.0],
    }
    # Totals: 1 - 0.2 = 0.8; 0.5 - 6.8 = -6.3; -0.2.
    assert totals == pytest.approx([0.8, -6.3, -0.2])
    assert reward.names == ["exact_match", "r1_format", "length"]


def test_composite_from_specs():
    reward = CompositeReward.from_specs(
        [("math_accuracy", 1.0, {}), ("r1_format", 0.5, {}), (f"{__name__}:length_reward", 0.0, {"scale": 3.0})]
    )
    totals, breakdown = reward.score(
        ["", ""], ["<think>t</think><answer>3</answer>", "\\boxed{4}"], ["3", "3"]
    )
    assert breakdown["math_accuracy"] == [1.0, 0.0]
    assert breakdown["r1_format"] == [1.0, 0.0]
    assert breakdown[f"{__name__}:length_reward"] == [3.0 * 34, 3.0 * 9]
    assert totals == pytest.approx([1.5, 0.0])


def test_composite_duplicate_names():
    with pytest.raises(ValueError, match="duplicate reward term name 'a'"):
        CompositeReward([RewardTerm("a", exact_match, 1.0, {}), RewardTerm("a", r1_format, 1.0, {})])
    with pytest.raises(ValueError, match="'exact_match' is listed more than once"):
        CompositeReward.from_specs([("exact_match", 1.0, {}), ("exact_match", 2.0, {})])


def test_composite_bad_spec_name():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        CompositeReward.from_specs([("nope", 1.0, {})])


def test_composite_empty_and_length_mismatch():
    with pytest.raises(ValueError, match="at least one term"):
        CompositeReward([])
    reward = CompositeReward([RewardTerm("exact_match", exact_match, 1.0, {})])
    with pytest.raises(ValueError, match="differ in length"):
        reward.score(["a", "b"], ["1"], ["1", "2"])


def test_composite_failure_names_term_and_sample():
    reward = CompositeReward([RewardTerm("fragile", failing_reward, 1.0, {})])
    with pytest.raises(RuntimeError, match="reward 'fragile' failed on sample 1: kaboom") as info:
        reward.score(["", ""], ["ok", "boom"], ["", ""])
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    # Unknown config args surface the same way, naming the term.
    reward = CompositeReward([RewardTerm("exact_match", exact_match, 1.0, {"bogus": 1})])
    with pytest.raises(RuntimeError, match="reward 'exact_match' failed on sample 0: .*bogus"):
        reward.score([""], ["1"], ["1"])
