"""Parts of a response, for rewards that judge only some of it: the thinking, what follows it, the final answer.

Reasoning models write ``<think>…</think>`` before their answer (DeepSeek-R1's
format, Qwen3's thinking mode). A reward that grades the answer should not be
fooled by a draft answer inside the thinking, and a length or language reward
may want one part only. These helpers are pure string functions.

Conventions:

* The first ``<think>`` opens the block and the first ``</think>`` after it closes
  it; text before ``<think>`` is neither thinking nor answer (it is dropped).
* No ``<think>`` at all: no thinking (None), the whole response is the rest.
* An unclosed ``<think>`` (a response cut off while thinking): everything after
  it is thinking and the rest is empty, so a truncated response has no answer.
  The rollout worker's ``thinking_tokens`` count follows the same rule.
* A ``</think>`` with no ``<think>`` before it (a template that writes the
  opening tag into the prompt) is not a think block here: the response is all
  rest.
"""

from __future__ import annotations

from rewards.r1 import extract_answer

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(response: str) -> tuple[str | None, str]:
    """``(thinking, rest)``: the text inside the first ``<think>…</think>`` and the text after ``</think>``.

    Both as written (not stripped). ``(None, response)`` without ``<think>``;
    ``(everything after <think>, "")`` when it never closes.
    """
    start = response.find(THINK_OPEN)
    if start < 0:
        return None, response
    start += len(THINK_OPEN)
    end = response.find(THINK_CLOSE, start)
    if end < 0:
        return response[start:], ""
    return response[start:end], response[end + len(THINK_CLOSE):]


def thinking(response: str) -> str | None:
    """The text inside the response's think block, or None if it has none (``split_thinking``)."""
    return split_thinking(response)[0]


def after_thinking(response: str) -> str:
    """The text after the think block: the whole response without one, empty if it never closes."""
    return split_thinking(response)[1]


def final_answer(response: str) -> str:
    """The answer a grader should read, stripped.

    The last ``<answer>…</answer>`` after the thinking (``rewards.r1.extract_answer``)
    if there is one, else all the text after the thinking. An answer tag inside
    the think block is a draft and is ignored.
    """
    rest = after_thinking(response)
    tagged = extract_answer(rest)
    return tagged if tagged is not None else rest.strip()


def thinking_token_count(response: str, tokenizer) -> int:
    """Tokens inside the response's ``<think>`` block (``thinking``), encoded on their own; -1 without one."""
    text = thinking(response)
    return -1 if text is None else len(tokenizer.encode(text, add_special_tokens=False))
