"""Rewards of multi-turn episodes that their environment scores (``env`` section, ``actors.episodes``)."""

from __future__ import annotations


def env_return(prompt: str, response: str, ground_truth: str, env_return: float | None = None) -> float:
    """The episode's score from its environment: a ``gym`` environment's summed step rewards, or a ``trl``
    environment's ``get_reward()`` (TRL scores with it when the class has one); 0.0 when there is none."""
    return 0.0 if env_return is None else float(env_return)
