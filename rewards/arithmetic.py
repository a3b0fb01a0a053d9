"""Rule-based rewards for short, single-value answers (the built-in arithmetic task).

In the arithmetic task (``rlcore.tasks.arithmetic``) the model writes just the
number and then EOS, e.g. response ``"47"`` for ground truth ``"47"``, so no
answer extraction is needed here; see ``rewards.r1`` for tagged answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rewards.api import Answer, stripped


def exact_match(prompt: str, response: str, ground_truth: str) -> float:
    """1.0 if ``response`` equals ``ground_truth`` as strings, ignoring surrounding whitespace.

    Only leading/trailing whitespace is ignored (detokenized responses often end in
    a newline or start with a space); anything inside counts, so ``"4 7"`` and
    ``"047"`` do not match ``"47"``.
    """
    return 1.0 if str(response).strip() == str(ground_truth).strip() else 0.0


def _to_float(text: str) -> float | None:
    """``text`` as a finite float, or None when it is not a plain number."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    # nan/inf parse as floats but can never be "close" to an answer in a useful way.
    return value if math.isfinite(value) else None


def numeric_match(prompt: str, response: str, ground_truth: str, tolerance: float = 1e-6) -> float:
    """1.0 if both parse as floats and ``|a - b| <= tolerance * max(1, |b|)``, else 0.0.

    The bound is absolute for ``|b| <= 1`` and relative above it, so ``"47.0"``
    matches ``"47"`` and large answers are not held to an absolute 1e-6. Anything
    that is not a plain number (including nan and inf) scores 0.0.
    """
    a, b = _to_float(response), _to_float(ground_truth)
    if a is None or b is None:
        return 0.0
    return 1.0 if abs(a - b) <= tolerance * max(1.0, abs(b)) else 0.0


@dataclass
class NumericMatchOptions:
    tolerance: float = 1e-6
    """Largest accepted difference: absolute for answers within [-1, 1], relative beyond."""


numeric_match.Options = NumericMatchOptions  # its args, typed
exact_match.answer = Answer(stripped, lambda a, b: a == b)  # how majority voting reads and compares answers
numeric_match.answer = Answer(stripped, lambda a, b: numeric_match("", a, b) == 1.0)
