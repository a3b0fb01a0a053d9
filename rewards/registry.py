"""Look up reward functions by name: a built-in name or an import path ``"module:attr"``.

A reward function is a plain callable
``fn(prompt: str, response: str, ground_truth: str, **args) -> float``; config
supplies ``args`` as extra keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from rewards.arithmetic import exact_match, numeric_match
from rewards.judge import LLMJudge
from rewards.l1 import L1Reward
from rewards.language import language_consistency
from rewards.r1 import math_accuracy, r1_format, r1_tag_count

RewardFn = Callable[..., float]

BUILTIN_REWARDS: dict[str, RewardFn] = {
    "exact_match": exact_match,
    "numeric_match": numeric_match,
    "math_accuracy": math_accuracy,
    "r1_format": r1_format,
    "r1_tag_count": r1_tag_count,
    "language_consistency": language_consistency,
    "l1": L1Reward,
    "judge": LLMJudge,
}


def _fail(name: str, problem: str) -> ValueError:
    """A one-line error for ``name`` that also lists what would have worked."""
    builtins = ", ".join(sorted(BUILTIN_REWARDS))
    message = f"{problem}: use one of {builtins} or an import path 'module:function'"
    # Exception texts quoted into the message may span lines; config errors should not.
    return ValueError(" ".join(message.split()))


def resolve_reward(name: str) -> RewardFn:
    """The reward function called ``name``: a key of ``BUILTIN_REWARDS`` or ``"package.module:attr"``.

    ``attr`` may be dotted (``"pkg.mod:Class.method"``). Raises a one-line ``ValueError``
    that names the problem (unknown name, missing module, missing attribute, not
    callable) and lists the built-in names.
    """
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    if ":" not in name:
        raise _fail(name, f"unknown reward {name!r}")
    module_name, _, attr_path = name.partition(":")
    if not module_name or not attr_path:
        raise _fail(name, f"bad reward import path {name!r}, expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Tell a missing module apart from a module that exists but fails on its own imports.
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise _fail(name, f"reward {name!r}: no module named {module_name!r}") from exc
        raise _fail(name, f"reward {name!r}: importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise _fail(name, f"reward {name!r}: importing module {module_name!r} failed: {exc}") from exc
    obj = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise _fail(name, f"reward {name!r}: module {module_name!r} has no attribute {attr_path!r}") from exc
    if not callable(obj):
        raise _fail(name, f"reward {name!r}: {attr_path!r} in module {module_name!r} is not callable")
    return obj
