"""Reward functions and classes, the length-target data transform, and their registry.

Importing this package is cheap: it pulls in only the standard library. Math-Verify
(and with it sympy) is imported inside :func:`math_accuracy` on first use, vLLM
inside the judge's constructor; nothing here imports ray.
"""

from rewards.arithmetic import exact_match, numeric_match
from rewards.l1 import EXACT_SUFFIX, MAX_SUFFIX, L1Reward, LengthTarget, add_length_target, l1_exact, l1_max
from rewards.language import language_consistency
from rewards.r1 import extract_answer, math_accuracy, r1_format, r1_tag_count
from rewards.reasoning import answer_match
from rewards.registry import REWARDS, TRANSFORMS
from rewards.text import after_thinking, final_answer, split_thinking, thinking

__all__ = [
    "EXACT_SUFFIX",
    "MAX_SUFFIX",
    "REWARDS",
    "TRANSFORMS",
    "L1Reward",
    "LengthTarget",
    "add_length_target",
    "after_thinking",
    "answer_match",
    "exact_match",
    "extract_answer",
    "final_answer",
    "l1_exact",
    "l1_max",
    "language_consistency",
    "math_accuracy",
    "numeric_match",
    "r1_format",
    "r1_tag_count",
    "split_thinking",
    "thinking",
]
