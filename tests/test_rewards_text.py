"""rewards.text: the thinking, the text after it and the final answer of a response."""

import pytest

import rewards
from rewards.text import after_thinking, final_answer, split_thinking, thinking


@pytest.mark.parametrize("response, expected", [
    ("<think>a</think>b", ("a", "b")),
    ("<think>\nplan\n</think>\n\n42", ("\nplan\n", "\n\n42")),  # as written, not stripped
    ("intro <think>a</think> b </think> c", ("a", " b </think> c")),  # the first block; text before it dropped
    ("<think>a</think>b<think>c</think>d", ("a", "b<think>c</think>d")),
    ("<think></think>", ("", "")),
    ("42", (None, "42")),  # no think block: all of it is the rest
    ("", (None, "")),
    ("reasoning</think>42", (None, "reasoning</think>42")),  # no opening tag: not a think block
    ("<think>cut off mid-thought", ("cut off mid-thought", "")),  # unclosed: all thinking, nothing after
])
def test_split_thinking(response, expected):
    assert split_thinking(response) == expected
    assert (thinking(response), after_thinking(response)) == expected


@pytest.mark.parametrize("response, answer", [
    ("<think>x</think> <answer> 4 </answer>", "4"),
    ("<think>x</think><answer>3</answer> no, <answer>4</answer>", "4"),  # the last answer tag
    ("<think>maybe <answer>3</answer></think> it is 4 ", "it is 4"),  # a draft inside the thinking is ignored
    ("<think>x</think>\n 4 \n", "4"),  # no answer tag: the text after the thinking
    (" 4 ", "4"),
    ("<answer>4</answer>", "4"),
    ("<think>x</think><answer></answer>", ""),  # an empty answer tag is an empty answer
    ("<think>truncated <answer>4</answer>", ""),  # cut off while thinking: no answer
])
def test_final_answer(response, answer):
    assert final_answer(response) == answer


def test_the_helpers_are_exported():
    assert {"split_thinking", "thinking", "after_thinking", "final_answer"} <= set(rewards.__all__)
    assert rewards.final_answer is final_answer
