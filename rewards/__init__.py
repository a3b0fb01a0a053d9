"""Rule-based reward functions: ``fn(prompt, response, ground_truth, **args) -> float``.

Importing this package is cheap: it pulls in only the standard library. Math-Verify
(and with it sympy) is imported inside :func:`math_accuracy` on first use, and
nothing here imports ray, vllm or torch.
"""

from rewards.arithmetic import exact_match, numeric_match
from rewards.composite import CompositeReward, RewardTerm
from rewards.r1 import extract_answer, math_accuracy, r1_format
from rewards.registry import BUILTIN_REWARDS, resolve_reward

__all__ = [
    "BUILTIN_REWARDS",
    "CompositeReward",
    "RewardTerm",
    "exact_match",
    "extract_answer",
    "math_accuracy",
    "numeric_match",
    "r1_format",
    "resolve_reward",
]
