"""A weighted sum of reward functions, scored over a batch, with a per-term breakdown.

The per-term values are returned unweighted so they can be logged as-is (e.g. the
R1-Zero accuracy and format rewards, DeepSeek-R1 paper section 2.2.2, are tracked
separately even when summed for training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rewards.registry import resolve_reward


@dataclass(frozen=True)
class RewardTerm:
    """One term of a composite reward: ``weight * fn(prompt, response, ground_truth, **args)``."""

    name: str
    fn: Callable[..., float]
    weight: float
    args: dict[str, Any] = field(default_factory=dict)


class CompositeReward:
    """The weighted sum of several :class:`RewardTerm` s, each with a unique name."""

    def __init__(self, terms: list[RewardTerm]) -> None:
        if not terms:
            raise ValueError("a composite reward needs at least one term")
        seen: set[str] = set()
        for term in terms:
            # Names key the breakdown; a duplicate would silently overwrite a term's values.
            if term.name in seen:
                raise ValueError(f"duplicate reward term name {term.name!r}")
            seen.add(term.name)
        self.terms: list[RewardTerm] = list(terms)

    @classmethod
    def from_specs(cls, specs: list[tuple[str, float, dict[str, Any]]]) -> CompositeReward:
        """Build from ``(name, weight, args)`` triples, resolving names with :func:`resolve_reward`.

        The name is used as the term name, so listing the same reward twice is an error.
        """
        names = [name for name, _, _ in specs]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"reward {name!r} is listed more than once")
        return cls(
            [
                RewardTerm(name=name, fn=resolve_reward(name), weight=float(weight), args=dict(args or {}))
                for name, weight, args in specs
            ]
        )

    @property
    def names(self) -> list[str]:
        """The term names, in order."""
        return [term.name for term in self.terms]

    def score(
        self, prompts: list[str], responses: list[str], ground_truths: list[str]
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Weighted total per sample and the unweighted per-term values keyed by term name.

        An exception from a reward function propagates as a ``RuntimeError`` naming
        the term and sample (no timeout or crash isolation here).
        """
        n = len(prompts)
        if len(responses) != n or len(ground_truths) != n:
            raise ValueError(
                f"prompts, responses and ground_truths differ in length: "
                f"{n}, {len(responses)}, {len(ground_truths)}"
            )
        totals = [0.0] * n
        breakdown: dict[str, list[float]] = {}
        for term in self.terms:
            values = []
            for i, (prompt, response, truth) in enumerate(zip(prompts, responses, ground_truths)):
                try:
                    value = float(term.fn(prompt, response, truth, **term.args))
                except Exception as exc:
                    raise RuntimeError(f"reward '{term.name}' failed on sample {i}: {exc}") from exc
                values.append(value)
                totals[i] += term.weight * value
            breakdown[term.name] = values
        return totals, breakdown
