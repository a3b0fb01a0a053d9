"""The one explicit list of algorithms. Adding an algorithm adds a line here; user
code outside the package calls ``register`` or names its class by import path
(``algorithm.name=my_algos:SignGRPO``). The driver never names an algorithm."""

from __future__ import annotations

import importlib

from algorithms.base import Algorithm
from algorithms.dpo import DPO, OnlineDPO
from algorithms.grpo import GRPO
from algorithms.ppo import PPO

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (GRPO, PPO, DPO, OnlineDPO)}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Register an algorithm class under ``cls.name``; usable as a decorator."""
    if cls.name in ALGORITHMS and ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"algorithm '{cls.name}' is already registered")
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm_class(name: str) -> type[Algorithm]:
    """A registered name, or an import path ``module:Class`` (which every Ray worker can import too)."""
    from rlcore.config import ConfigError

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"algorithm.name='{name}': cannot import it ({exc})") from None
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm.name='{name}' is not registered; registered: {', '.join(sorted(ALGORITHMS))}"
                          " (or give an import path 'module:Class')")
    return ALGORITHMS[name]
