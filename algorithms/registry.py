"""The one explicit list of algorithms. Adding an algorithm adds a line here (or a
``register`` call from user code); the driver never names an algorithm."""

from __future__ import annotations

from algorithms.base import Algorithm
from algorithms.grpo import GRPO

ALGORITHMS: dict[str, type[Algorithm]] = {GRPO.name: GRPO}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Register an algorithm class under ``cls.name``; usable as a decorator."""
    if cls.name in ALGORITHMS and ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"algorithm '{cls.name}' is already registered")
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm_class(name: str) -> type[Algorithm]:
    from rlcore.config import ConfigError

    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name='{name}' is not registered; registered: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]
