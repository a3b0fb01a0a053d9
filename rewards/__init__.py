"""Rule-based reward functions: ``fn(prompt, response, ground_truth, **args) -> float``.

Importing this package is cheap: it pulls in only the standard library. Math-Verify
(and with it sympy) is imported inside :func:`math_accuracy` on first use, and
nothing here imports ray, vllm or torch.
"""

from rewards.arithmetic import exact_match, numeric_match
from rewards.composite import CompositeReward, RewardTerm
from rewards.l1 import EXACT_SUFFIX, MAX_SUFFIX, add_length_target, l1_exact, l1_max, length_metrics
from rewards.language import language_consistency
from rewards.r1 import extract_answer, math_accuracy, r1_format, r1_tag_count
from rewards.registry import BUILTIN_REWARDS, resolve_reward

__all__ = [
    "BUILTIN_REWARDS",
    "EXACT_SUFFIX",
    "MAX_SUFFIX",
    "CompositeReward",
    "RewardTerm",
    "add_length_target",
    "exact_match",
    "extract_answer",
    "l1_exact",
    "l1_max",
    "language_consistency",
    "length_metrics",
    "math_accuracy",
    "numeric_match",
    "r1_format",
    "r1_tag_count",
    "resolve_reward",
]
