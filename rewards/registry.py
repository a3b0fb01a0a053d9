"""The built-in rewards and data transforms, by name; anything else by import path ``module:attr``.

A reward is a function ``fn(prompt, response, ground_truth, **args) -> float`` or a
class with a batched ``score(samples)`` (``rewards.api``). A data transform is a
class whose instances map rows to rows (``rlcore.data``); L1's length target is
one. Either may declare ``Options``, the dataclass its ``args`` (rewards) or node
(transforms) is parsed into.
"""

from __future__ import annotations

from collections.abc import Callable

from rewards.arithmetic import exact_match, numeric_match
from rewards.confidence import PolicyConfidence
from rewards.env import env_return
from rewards.generative_verifier import GenerativeVerifier
from rewards.judge import LLMJudge
from rewards.l1 import L1Reward, LengthTarget
from rewards.language import language_consistency
from rewards.r1 import math_accuracy, r1_format, r1_tag_count
from rewards.reasoning import answer_match
from rewards.reasoning_gym import ReasoningGymScore
from rewards.reward_model import OutcomeRewardModel, ProcessRewardModel
from rlcore.plugins import Registry

REWARDS: Registry[Callable] = Registry("reward", {
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
}, path_hint="module:function")

TRANSFORMS: Registry[type] = Registry("data transform", {"length_target": LengthTarget})
