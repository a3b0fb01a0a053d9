"""DeepSeek-R1-Zero style rule-based rewards: an accuracy reward and a format reward.

Source: DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via
Reinforcement Learning" (arXiv:2501.12948), section 2.2.2 "Reward Modeling".
R1-Zero is trained with two rule-based rewards: *accuracy* (is the final answer
right, e.g. a math answer given "in a specified format (e.g., within a box)") and
*format* (the model must put its reasoning between ``<think>`` and ``</think>``),
with the answer between ``<answer>`` and ``</answer>`` as in the paper's Table 1
template.

Answer checking uses Hugging Face Math-Verify (https://github.com/huggingface/Math-Verify).
It is imported inside :func:`math_accuracy` only, so importing this module stays cheap.
"""

from __future__ import annotations

import re

from rewards.api import Answer

# Content of an <answer> block that does not itself contain another "<answer>",
# so "<answer>a<answer>b</answer>" yields "b", the innermost/last block.
_ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)

# The whole (stripped) response must be exactly: think block, optional whitespace, answer block.
_R1_FORMAT_RE = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.DOTALL)
_R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def extract_answer(response: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, stripped; None if there is none.

    The last block is used because models sometimes draft an answer tag inside their
    reasoning and then give the final one at the end.
    """
    matches = _ANSWER_RE.findall(response)
    return matches[-1].strip() if matches else None


def _last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` in ``text``, with braces balanced; None if absent.

    A regex cannot match nested braces (``\boxed{\frac{1}{2}}``), so this scans them.
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: no usable box


def r1_format(prompt: str, response: str, ground_truth: str) -> float:
    """1.0 iff the response is ``<think>...</think> <answer>...</answer>`` and nothing else.

    DeepSeek-R1 paper, section 2.2.2 ("Format rewards"): the model is rewarded for
    putting its thinking between ``<think>`` tags (and, per the Table 1 template, the
    answer between ``<answer>`` tags). Each of the four tags must occur exactly once;
    otherwise a model could be rewarded for repeated or nested blocks. Surrounding
    whitespace is ignored; any other text before ``<think>`` or after ``</answer>``
    scores 0.0.
    """
    text = response.strip()
    if any(text.count(tag) != 1 for tag in _R1_TAGS):
        return 0.0
    return 1.0 if _R1_FORMAT_RE.match(text) else 0.0


# Markers of text that is already delimited math, which math-verify's LaTeX extraction finds as-is.
_MATH_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")


def _parse_math(text: str, *, final_answer: bool) -> list:
    r"""``math_verify.parse`` of ``text`` with the signal-based timeout disabled.

    ``parsing_timeout=None`` is essential: math-verify's default (5 s) wraps parsing
    in ``signal.alarm``, which raises ``ValueError`` when called off the main thread,
    as in Ray actor methods run in threads (math_verify/utils.py ``timeout``: None or
    <= 0 returns the function undecorated). Time limits are the caller's job.

    With ``final_answer`` (a gold answer, or the content of ``<answer>``/``oxed{}``)
    undelimited text is parsed as ``$text$`` first. Math-Verify only finds LaTeX inside
    delimiters, and its plain-expression fallback matches a prefix: bare ``1+x^2``
    parses as ``1`` and ``2\pi`` as ``2``, which would reward a wrong answer ``1`` or
    ``2``. The plain parse is kept as a fallback for when the wrapped text finds nothing.
    Free text (a whole response) is parsed as-is, the way math-verify is meant to be used.
    """
    from math_verify import parse  # lazy: math_verify pulls in sympy and is slow to import

    if final_answer and not any(d in text for d in _MATH_DELIMITERS):
        parsed = parse(f"${text}$", parsing_timeout=None)
        if parsed:
            return parsed
    return parse(text, parsing_timeout=None)


def math_accuracy(prompt: str, response: str, ground_truth: str) -> float:
    r"""1.0 if the response's final answer is mathematically equal to ``ground_truth``.

    DeepSeek-R1 paper, section 2.2.2 ("Accuracy rewards"): for math problems with
    deterministic results the final answer is checked by rules. The answer is taken
    from the last ``<answer>`` block if any, else from the last ``\boxed{}``, else the
    whole response, and compared with Math-Verify as ``verify(parse(gold),
    parse(answer))``; gold goes first because ``verify`` is not symmetric (Math-Verify
    docs). Both signal-based timeouts are disabled (``parsing_timeout=None``,
    ``timeout_seconds=None``) so this works off the main thread; see ``_parse_math``.
    Any error scores 0.0: a malformed answer is a wrong answer.
    """
    try:
        from math_verify import verify  # lazy, see _parse_math

        answer = tagged_answer(response)
        if answer is not None:
            pred = _parse_math(answer, final_answer=True)
        else:
            pred = _parse_math(response, final_answer=False)
        gold = _parse_math(ground_truth, final_answer=True)
        if not gold or not pred:
            return 0.0
        return 1.0 if verify(gold, pred, timeout_seconds=None) else 0.0
    except Exception:
        return 0.0


def tagged_answer(response: str) -> str | None:
    r"""The last ``<answer>`` block, else the last ``\boxed{}``; None when the response marks no answer."""
    answer = extract_answer(response)
    return _last_boxed(response) if answer is None else answer


def final_answer(response: str) -> str:
    r"""The answer ``math_accuracy`` grades: ``tagged_answer``, else the whole response."""
    answer = tagged_answer(response)
    return response.strip() if answer is None else answer


def same_math(a: str, b: str) -> bool:
    """Whether two final answers are mathematically equal (Math-Verify, both ways); an error is a no."""
    try:
        from math_verify import verify

        pa, pb = _parse_math(a, final_answer=True), _parse_math(b, final_answer=True)
        return bool(pa and pb and verify(pa, pb, timeout_seconds=None) and verify(pb, pa, timeout_seconds=None))
    except Exception:
        return False


def r1_tag_count(prompt: str, response: str, ground_truth: str) -> float:
    """Partial credit for the R1 tags: 0.25 for each of the four tags that occurs exactly once.

    The "tag count" shaping reward of the open-r1 GRPO recipe (huggingface/open-r1,
    ``src/open_r1/rewards.py``, ``tag_count_reward``, itself adapted from a TRL GRPO
    demo gist): where :func:`r1_format` is all-or-nothing, this gives a model that
    has learnt some of the template a graded signal, 0.25 each for exactly one
    ``<think>``, ``</think>``, ``<answer>`` and ``</answer>``.

    Unlike open-r1, which counts the newline-delimited forms (``"<think>\\n"``,
    ``"\\n</think>\\n"``, ...) of its newline-strict format reward, the bare tags are
    counted here, to match :func:`r1_format`, which allows any whitespace around
    them. A tag that is missing or repeated earns nothing; order and surrounding
    text are not checked, so 1.0 here does not imply 1.0 from :func:`r1_format`.
    """
    return 0.25 * sum(response.count(tag) == 1 for tag in _R1_TAGS)


math_accuracy.answer = Answer(final_answer, same_math)  # how majority voting reads and compares answers
