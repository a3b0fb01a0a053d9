"""The verifier reward of the reasoning task (``rlcore.tasks.reasoning``): is the tagged final answer right?

DeepSeek-R1 (arXiv:2501.12948, section 2.2.2) rewards accuracy with a rule: the
final answer, given in a fixed format, is compared with the known result. Here
the format is R1's ``<answer>…</answer>`` block; the reasoning in ``<think>`` is
not graded (``r1_format`` rewards the format itself).
"""

from __future__ import annotations

from rewards.api import Answer
from rewards.r1 import extract_answer
from rlcore.tasks.reasoning import same_answer


def answer_match(prompt: str, response: str, ground_truth: str) -> float:
    """1.0 iff the last ``<answer>…</answer>`` block holds the ground truth, else 0.0 (no block: 0.0).

    Plain decimal numbers compare by value, so ``"045"`` and ``"45.0"`` match
    ``"45"``: the task grades the sum, not how it is spelled. Anything else
    compares as text, ignoring surrounding whitespace
    (``rlcore.tasks.reasoning.same_answer``).
    """
    answer = extract_answer(response)
    return 1.0 if answer is not None and same_answer(answer, str(ground_truth)) else 0.0


answer_match.answer = Answer(extract_answer, same_answer)  # how majority voting reads and compares answers
