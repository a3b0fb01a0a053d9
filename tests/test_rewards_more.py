"""Tests for the R1 tag-count, language-consistency and L1 length-control rewards.

True positives, false positives and malformed input, with hand-computed numbers.
"""

from __future__ import annotations

import inspect
import random

import pytest

from rewards import (
    EXACT_SUFFIX,
    MAX_SUFFIX,
    REWARDS,
    TRANSFORMS,
    L1Reward,
    LengthTarget,
    add_length_target,
    l1_exact,
    l1_max,
    language_consistency,
    r1_format,
    r1_tag_count,
)
from rewards.api import RewardSample, check_scores, load_reward, term_value
from rewards.language import letter_scripts, target_scripts
from rlcore.config import ConfigError
from rlcore.data import PreferenceRow, PromptRow


def resolve_reward(name: str):
    return REWARDS.resolve(name, "reward.terms[0].name")

# --- r1_tag_count ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
        ("<think>\nreason\n</think>\n<answer>\n4\n</answer>", 1.0),  # open-r1's newline layout
        ("  <think>x</think> <answer>y</answer>\n", 1.0),  # bare tags count, any whitespace
        ("<think>reasoning</think>", 0.5),
        ("<answer>4</answer>", 0.5),
        ("<think>only opened", 0.25),
        ("4", 0.0),
        ("", 0.0),
    ],
)
def test_tag_count_partial_credit(response, expected):
    assert r1_tag_count("q", response, "4") == expected


@pytest.mark.parametrize(
    "response, expected",
    [
        # A repeated tag earns nothing for that tag, the other three still count.
        ("<think>a<think>b</think><answer>c</answer>", 0.75),
        ("<think>a</think><answer>b</answer><answer>c</answer>", 0.5),
        ("<think><think></think></think><answer><answer></answer></answer>", 0.0),
        # Tags are case-sensitive, as in r1_format.
        ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),
        ("<think>a</think><Answer>b</answer>", 0.75),
    ],
)
def test_tag_count_repeated_or_malformed(response, expected):
    assert r1_tag_count("q", response, "4") == expected


def test_tag_count_ignores_order_unlike_r1_format():
    # Each tag once, but in the wrong order: full tag-count credit, no format credit.
    response = "</answer>4<answer></think>x<think>"
    assert r1_tag_count("q", response, "4") == 1.0
    assert r1_format("q", response, "4") == 0.0


def test_tag_count_returns_float():
    assert type(r1_tag_count("q", "", "")) is float
    assert type(r1_tag_count("q", "<think></think>", "")) is float


# --- language_consistency: scripts -----------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello", {"LATIN": 5}),
        ("Привет", {"CYRILLIC": 6}),
        ("你好", {"CJK": 2}),
        ("Ωμέγα", {"GREEK": 5}),
        ("שלום", {"HEBREW": 4}),
        ("مرحبا", {"ARABIC": 5}),
        ("안녕", {"HANGUL": 2}),
        ("नमस्ते", {"DEVANAGARI": 4}),  # vowel signs and virama are marks, not letters
        ("สวัสดี", {"THAI": 4}),  # likewise the Thai vowel marks
        # Hiragana, katakana and the long-vowel mark are one script.
        ("ひらがな カタカナ ー", {"KANA": 9}),
        ("人々", {"CJK": 2}),  # the ideographic iteration mark counts as Han
        # NFKC: fullwidth, halfwidth, math bold, ligature.
        ("ＡＢ ｱ 𝐀 ﬁ", {"LATIN": 5, "KANA": 1}),
        ("don\u02bct", {"LATIN": 4}),  # MODIFIER LETTER APOSTROPHE belongs to no script
        ("2 + 2 = 4, ok?! 😀", {"LATIN": 2}),  # digits, punctuation, symbols, emoji ignored
        ("<think>x<y</think> <br/> \\frac{a}{b}", {"LATIN": 4}),  # tags and \frac stripped; x<y kept
        ("", {}),
    ],
)
def test_letter_scripts(text, expected):
    assert dict(letter_scripts(text)) == expected


def test_target_scripts():
    assert target_scripts("What is two plus two?") == {"LATIN"}
    assert target_scripts("Сколько будет два плюс два?") == {"CYRILLIC"}
    assert target_scripts("二加二等于多少？") == {"CJK"}
    # Japanese (kana present) accepts kana and kanji; Chinese (no kana) only Han.
    assert target_scripts("りんごを三つ食べました。") == {"KANA", "CJK"}
    assert target_scripts("日本語を話す") == {"KANA", "CJK"}  # Han 4 > kana 2, but kana: Japanese
    # A tie keeps every top script, independent of order.
    assert target_scripts("ab вг") == {"LATIN", "CYRILLIC"} == target_scripts("вг ab")
    # The dominant script wins even with some Latin (a variable) in a Chinese prompt.
    assert target_scripts("求 x 的值") == {"CJK"}
    assert target_scripts("12 + 30 = ?") == frozenset()


# --- language_consistency: rewards -----------------------------------------------------

EN = "What is two plus two?"
ZH = "计算二加二等于多少？"
RU = "Сколько будет два плюс два?"


@pytest.mark.parametrize(
    "prompt, response",
    [
        (EN, "<think>Two plus two is four.</think><answer>4</answer>"),
        (ZH, "<think>二加二等于四。</think><answer>4</answer>"),
        (RU, "<think>Два плюс два — четыре.</think><answer>4</answer>"),
        (ZH, "答案是 \\boxed{4}"),  # LaTeX commands are notation, not English
        (EN, "The answer: 42!!!"),
        (EN, "ＦＵＬＬＷＩＤＴＨ"),
        # Kanji and kana both count for a Japanese prompt.
        ("りんごを三つ食べました。残りはいくつ？", "答えは二つです"),
    ],
)
def test_language_consistency_true_positives(prompt, response):
    assert language_consistency(prompt, response, "4") == 1.0


@pytest.mark.parametrize(
    "prompt, response",
    [
        (EN, "<think>二加二等于四。</think><answer>4</answer>"),
        (EN, "Два плюс два — четыре."),
        (ZH, "Two plus two is four."),
        (ZH, "Два плюс два"),
        (RU, "Two plus two is four."),
        (RU, "二加二等于四"),
    ],
)
def test_language_consistency_wrong_language(prompt, response):
    assert language_consistency(prompt, response, "4") == 0.0


@pytest.mark.parametrize(
    "prompt, response, expected",
    [
        # 二加二等于四: 6 Han letters; "so the answer": 2 + 3 + 6 = 11 Latin letters.
        (ZH, "<think>二加二等于四 so the answer</think>", 6 / 17),
        # Два плюс два: 3 + 4 + 3 = 10 Cyrillic letters; four: 4 Latin.
        (RU, "Два плюс два — four", 10 / 14),
        # "two is": 3 + 2 = 5 Latin letters; четыре: 6 Cyrillic.
        (EN, "two is четыре", 5 / 11),
        # Chinese prompt, Japanese answer: 元気 are Han (2), です kana (2).
        ("你好吗", "元気です", 2 / 4),
        # A tie in the prompt (2 Latin, 2 Cyrillic) accepts both: a, д of a, д, 中.
        ("ab вг", "a д 中", 2 / 3),
        # A comparison is not a tag: x and y count against a Chinese response.
        (ZH, "因为 x<y", 2 / 4),
    ],
)
def test_language_consistency_mixed_shares(prompt, response, expected):
    assert language_consistency(prompt, response, "") == pytest.approx(expected)


def test_language_consistency_ignores_tags():
    # Without stripping, "think" and "answer" (21 Latin letters) would dilute the share.
    response = "<think>два</think>\n<answer>четыре</answer>"
    assert language_consistency(RU, response, "") == 1.0
    assert language_consistency(ZH, "<think>四</think>", "") == 1.0


def test_language_consistency_no_letters():
    # A prompt without letters sets no target: every response scores 1.0.
    for response in ("", "42", "four", "四", "<think></think>"):
        assert language_consistency("12 + 30 = ?", response, "42") == 1.0
    assert language_consistency("", "anything", "") == 1.0
    # A response without letters scores 0.0 when the prompt has a language.
    for response in ("", "42", "   ", "<think></think><answer>4</answer>", "\\frac{1}{2}"):
        assert language_consistency(EN, response, "4") == 0.0


def test_language_consistency_in_unit_interval():
    for prompt in (EN, ZH, RU, ""):
        for response in ("", "mixed 混合 смесь", "<answer>4</answer>", "ok"):
            assert 0.0 <= language_consistency(prompt, response, "") <= 1.0


# --- L1 / LCPO rewards -----------------------------------------------------------------


def test_l1_defaults_are_the_papers():
    exact = inspect.signature(l1_exact).parameters
    maximum = inspect.signature(l1_max).parameters
    assert exact["alpha"].default == 0.0003
    assert maximum["alpha"].default == 0.0003
    assert maximum["delta"].default == 0.5


@pytest.mark.parametrize(
    "correct, target, length, expected",
    [
        (1.0, 1000, 1000, 1.0),  # on target: no penalty
        (1.0, 1000, 1500, 0.85),  # 500 over: 1 - 0.0003 * 500
        (1.0, 1000, 500, 0.85),  # 500 under: the same, the penalty is symmetric
        (0.0, 1000, 1000, 0.0),  # wrong but on target
        (0.0, 1000, 4000, -0.9),  # wrong and 3000 off: below zero, no clipping
        (1.0, 100, 4100, -0.2),  # right but 4000 off: 1 - 1.2
    ],
)
def test_l1_exact(correct, target, length, expected):
    assert l1_exact(correct, target, length) == pytest.approx(expected)


def test_l1_exact_custom_alpha():
    assert l1_exact(1.0, 10, 20, alpha=0.1) == pytest.approx(0.0)
    assert l1_exact(1.0, 10, 20, alpha=0.0) == 1.0


@pytest.mark.parametrize(
    "correct, target, length, expected",
    [
        (1.0, 1000, 1000, 0.5),  # at the budget: delta
        (1.0, 1000, 0, 0.8),  # 1000 under: 0.3 + 0.5
        (1.0, 4000, 0, 1.0),  # 4000 under: 1.2 + 0.5 clipped to 1
        (1.0, 1000, 2000, 0.2),  # 1000 over: -0.3 + 0.5
        (1.0, 1000, 3000, 0.0),  # 2000 over: -0.6 + 0.5 clipped to 0
        (0.0, 1000, 500, 0.0),  # wrong: 0 whatever the length
        (0.0, 1000, 9000, 0.0),
        (0.5, 1000, 1000, 0.25),  # partial correctness scales the factor
    ],
)
def test_l1_max(correct, target, length, expected):
    assert l1_max(correct, target, length) == pytest.approx(expected)


def test_l1_max_clip_boundaries():
    # alpha * 500 + 0.5 == 1.0 exactly at the upper clip, 0.0 exactly at the lower.
    assert l1_max(1.0, 1000, 500, alpha=0.001) == pytest.approx(1.0)
    assert l1_max(1.0, 1000, 0, alpha=0.001) == 1.0
    assert l1_max(1.0, 1000, 1500, alpha=0.001) == pytest.approx(0.0)
    assert l1_max(1.0, 1000, 2500, alpha=0.001) == 0.0
    assert l1_max(1.0, 100, 100, delta=1.0) == 1.0
    assert l1_max(1.0, 100, 100, delta=0.0) == 0.0
    assert l1_max(1.0, 100, 101, delta=0.0) == 0.0


# --- add_length_target -----------------------------------------------------------------


def test_suffix_texts():
    assert EXACT_SUFFIX.format(n=512) == "Think for 512 tokens."
    assert MAX_SUFFIX.format(n=512) == "Think for maximum 512 tokens."


def test_add_length_target_seeded():
    # random.Random(0).randint(100, 4000) is 3558 (randint has been stable since Python 3.2).
    prompt, n = add_length_target("What is 2+2?", random.Random(0), 100, 4000, "exact")
    assert (prompt, n) == ("What is 2+2? Think for 3558 tokens.", 3558)
    prompt, n = add_length_target("What is 2+2?", random.Random(0), 100, 4000, "max")
    assert (prompt, n) == ("What is 2+2? Think for maximum 3558 tokens.", 3558)


def test_add_length_target_deterministic():
    def draws(seed: int) -> list[tuple[str, int]]:
        rng = random.Random(seed)
        return [add_length_target(f"q{i}", rng, 100, 4000, "exact") for i in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    # The same draws as the rng itself would make: one randint per prompt.
    rng = random.Random(7)
    assert [n for _, n in draws(7)] == [rng.randint(100, 4000) for _ in range(20)]


def test_add_length_target_range_inclusive():
    rng = random.Random(1)
    seen = {add_length_target("q", rng, 1, 3, "max")[1] for _ in range(300)}
    assert seen == {1, 2, 3}
    assert add_length_target("q", rng, 250, 250, "exact") == ("q Think for 250 tokens.", 250)


def test_add_length_target_whitespace():
    rng = random.Random(0)
    assert add_length_target("Question?  \n", rng, 5, 5, "exact")[0] == "Question? Think for 5 tokens."
    assert add_length_target("", rng, 5, 5, "max")[0] == "Think for maximum 5 tokens."


@pytest.mark.parametrize("mode", ["", "Exact", "MAX", "min", "exactly"])
def test_add_length_target_bad_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        add_length_target("q", random.Random(0), 100, 4000, mode)


@pytest.mark.parametrize("low, high", [(0, 10), (-5, 10), (200, 100)])
def test_add_length_target_bad_range(low, high):
    with pytest.raises(ValueError, match="low"):
        add_length_target("q", random.Random(0), low, high, "exact")


# --- L1Reward: the reward term and its logged-only parts ----------------------------------


def l1_sample(response: str, answer: str, n_tokens: int, target: int) -> RewardSample:
    return RewardSample(f"q Think for {target} tokens.", response, list(range(n_tokens)), answer,
                        {"target_tokens": target})


def assert_rows(rows: list[dict], expected: list[dict]) -> None:
    assert [sorted(r) for r in rows] == [sorted(e) for e in expected]  # exactly these parts
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want)


# (response, answer, n_y, N): right 4 of 10, wrong 10 of 4, right 5 of 5, wrong 6 of 5
L1_SAMPLES = [l1_sample("2", "2", 4, 10), l1_sample("3", "2", 10, 4), l1_sample("7", "7", 5, 5),
              l1_sample("8", "9", 6, 5)]


def test_l1_reward_exact_parts():
    rows = check_scores("l1", L1Reward(mode="exact", alpha=0.01).score(L1_SAMPLES), 4)
    assert_rows(rows, [
        {"score": 1 - 0.01 * 6, "_abs_deviation": 6.0, "_rel_deviation": 6 / 10},  # 0.94
        {"score": 0 - 0.01 * 6, "_abs_deviation": 6.0, "_rel_deviation": 6 / 4},  # -0.06: wrong, off target
        {"score": 1.0, "_abs_deviation": 0.0, "_rel_deviation": 0.0},  # right, on target
        {"score": 0 - 0.01 * 1, "_abs_deviation": 1.0, "_rel_deviation": 1 / 5},
    ])
    assert all("_violation" not in row for row in rows)  # exact mode has no budget to violate
    # the term's value is the score alone: the "_" parts are only logged
    assert [term_value(r) for r in rows] == pytest.approx([0.94, -0.06, 1.0, -0.01])


def test_l1_reward_max_parts():
    rows = check_scores("l1", L1Reward(mode="max", alpha=0.1, delta=0.5).score(L1_SAMPLES), 4)
    assert_rows(rows, [
        {"score": 1.0, "_abs_deviation": 6.0, "_rel_deviation": 0.6, "_violation": 0.0},  # clip(0.6 + 0.5) = 1
        {"score": 0.0, "_abs_deviation": 6.0, "_rel_deviation": 1.5, "_violation": 1.0},  # wrong (and over)
        {"score": 0.5, "_abs_deviation": 0.0, "_rel_deviation": 0.0, "_violation": 0.0},  # at the budget: delta
        {"score": 0.0, "_abs_deviation": 1.0, "_rel_deviation": 0.2, "_violation": 1.0},  # wrong, 1 over
    ])
    # averaged over the batch, as logged under reward/l1/<part>
    means = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    assert means == pytest.approx({"score": 0.375, "_abs_deviation": 3.25, "_rel_deviation": 0.575,
                                   "_violation": 0.5})
    right_over = check_scores("l1", L1Reward(mode="max", alpha=0.1).score([l1_sample("1", "1", 7, 5)]), 1)
    assert_rows(right_over, [{"score": 0.3, "_abs_deviation": 2.0, "_rel_deviation": 0.4,
                                         "_violation": 1.0}])  # right, 2 over: 0.5 - 0.2


def test_l1_reward_accuracy_reward_and_its_args():
    samples = [l1_sample("2.05", "2", 3, 3), l1_sample("2.5", "2", 3, 3)]
    strict = L1Reward(mode="exact", accuracy="numeric_match")
    loose = L1Reward(mode="exact", accuracy="numeric_match", accuracy_args={"tolerance": 0.1})
    assert [r["score"] for r in strict.score(samples)] == [0.0, 0.0]
    assert [r["score"] for r in loose.score(samples)] == [1.0, 0.0]  # |0.05| <= 0.1 * 2; |0.5| is not
    # by name, with the config's args, as a reward term is built
    assert [r["score"] for r in load_reward("l1", {"accuracy": "numeric_match",
                                                   "accuracy_args": {"tolerance": 0.1}}).score(samples)] == [1.0, 0.0]


def test_l1_reward_bad_options():
    with pytest.raises(ValueError, match="unknown L1 mode 'both'"):
        L1Reward(mode="both")
    with pytest.raises(ConfigError, match="reward='nope' is not a registered reward"):
        L1Reward(accuracy="nope")


# --- LengthTarget: L1's data transform ------------------------------------------------------


ROWS = [PromptRow(i, f"{i}+1=", str(i + 1), f"f.jsonl line {i + 1}", {"level": "easy"}) for i in range(30)]


def test_length_target_is_registered():
    assert TRANSFORMS.resolve("length_target", "data.transforms[0].name") is LengthTarget
    assert TRANSFORMS.names() == ["length_target"]


def test_length_target_is_deterministic_per_seed():
    t = LengthTarget(mode="exact", low=2, high=6)
    first, again, other = t(ROWS, 0), t(ROWS, 0), t(ROWS, 1)
    assert first == again
    assert [r.metadata["target_tokens"] for r in first] != [r.metadata["target_tokens"] for r in other]
    rng = random.Random(0)  # one draw per row, from random.Random(seed)
    assert [r.metadata["target_tokens"] for r in first] == [rng.randint(2, 6) for _ in ROWS]


def test_length_target_suffix_metadata_and_the_rest_of_the_row():
    for mode, template in (("exact", "{p} Think for {n} tokens."), ("max", "{p} Think for maximum {n} tokens.")):
        out = LengthTarget(mode=mode, low=2, high=6)(ROWS, 3)
        for before, after in zip(ROWS, out):
            n = after.metadata["target_tokens"]
            assert after.prompt == template.format(p=before.prompt, n=n)
            assert after.metadata == {"level": "easy", "target_tokens": n}  # the row's own metadata is kept
            assert (after.index, after.answer, after.source) == (before.index, before.answer, before.source)
    assert ROWS[0].prompt == "0+1=" and ROWS[0].metadata == {"level": "easy"}  # the input rows are untouched
    [pair] = LengthTarget(mode="max", low=4, high=4)([PreferenceRow(0, "1+1=", "2", "3")], 0)  # pairs too
    assert (pair.prompt, pair.metadata, pair.chosen) == ("1+1= Think for maximum 4 tokens.", {"target_tokens": 4}, "2")


def test_length_target_range_is_respected():
    out = LengthTarget(mode="exact", low=2, high=4)(ROWS * 10, 5)
    assert {r.metadata["target_tokens"] for r in out} == {2, 3, 4}
    assert {r.metadata["target_tokens"] for r in LengthTarget(low=7, high=7)(ROWS, 0)} == {7}
    assert LengthTarget()(ROWS, 0)[0].prompt.endswith(" tokens.")  # defaults: exact, 1..8
    assert {r.metadata["target_tokens"] for r in LengthTarget()(ROWS * 10, 0)} <= set(range(1, 9))


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "short"}, "unknown L1 mode 'short'"),
    ({"low": 0, "high": 3}, "need 1 <= low <= high, got low=0, high=3"),
    ({"low": 5, "high": 2}, "need 1 <= low <= high, got low=5, high=2"),
])
def test_length_target_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LengthTarget(**kwargs)


# --- registry --------------------------------------------------------------------------


def test_registry_resolves_new_rewards():
    assert resolve_reward("r1_tag_count") is r1_tag_count
    assert resolve_reward("language_consistency") is language_consistency
    assert REWARDS.entries["r1_tag_count"] is r1_tag_count
    assert REWARDS.entries["language_consistency"] is language_consistency
    assert resolve_reward("rewards.l1:l1_max") is l1_max


def test_unknown_name_error_lists_new_rewards():
    with pytest.raises(ConfigError) as info:
        resolve_reward("tag_count")
    assert "language_consistency" in str(info.value)
    assert "r1_tag_count" in str(info.value)


def test_new_rewards_follow_the_contract():
    # fn(prompt, response, ground_truth) -> float, also through keyword arguments.
    for name in ("r1_tag_count", "language_consistency"):
        value = resolve_reward(name)(prompt="Hi?", response="<think>ok</think>", ground_truth="")
        assert isinstance(value, float)


def test_l1_reward_counts_thinking_tokens_when_asked():
    # 12 response tokens, of which 7 think; target 7: on target by thinking, 5 over by the whole response
    sample = RewardSample("q Think for 7 tokens.", "2", list(range(12)), "2",  # exact_match: right
                          {"target_tokens": 7}, thinking_tokens=7)
    no_think = RewardSample("q Think for 7 tokens.", "2", list(range(3)), "2", {"target_tokens": 7})
    by_response = L1Reward(mode="exact", alpha=0.1).score([sample])[0]
    by_thinking = L1Reward(mode="exact", alpha=0.1, count="thinking").score([sample, no_think])
    assert by_response["score"] == pytest.approx(1 - 0.5)
    assert by_thinking[0]["score"] == pytest.approx(1.0)
    assert by_thinking[1]["score"] == pytest.approx(1 - 0.7)  # no think block: 0 thinking tokens, 7 short
    with pytest.raises(ValueError, match="count"):
        L1Reward(count="words")
