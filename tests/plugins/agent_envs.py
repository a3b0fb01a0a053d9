"""Tools and environments for the agent tests: both contracts, and tools that fail in each way the framework
must survive."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rlcore.tasks.multiply import multiply


class Counter:
    """TRL's ``environment_factory`` shape: ``reset(**row)``, one tool, ``get_reward``."""

    def __init__(self):
        self.total = 0
        self.row: dict = {}

    def reset(self, **row) -> str:
        self.row = row
        self.total = int(row.get("start", 0))
        return f" The counter starts at {self.total}."

    def add(self, n: int) -> int:
        """Add to the counter.

        Args:
            n: How much to add.
        """
        self.total += n
        return self.total

    def get_reward(self) -> float:
        return float(self.total)


class NoReset:
    """Not an environment: no ``reset``."""


def boom(x: int) -> int:
    """A tool that always raises.

    Args:
        x: Anything.
    """
    raise ValueError(f"boom on {x}")


def slow(seconds: float) -> str:
    """A tool that sleeps.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "late"


async def shout(text: str) -> str:
    """An async tool.

    Args:
        text: What to shout.
    """
    return text.upper()


def undocumented(x: int) -> int:
    return x


class Guess:
    """The gym shape: the whole model turn is a guess of the row's answer; three guesses at most."""

    def reset(self, seed: int | None = None, **row) -> tuple[str, dict]:
        self.target, self.guesses, self.seed = str(row["answer"]), 0, seed
        return " Guess the number.", {}

    def step(self, text: str) -> tuple[str, float, bool, bool, dict]:
        self.guesses += 1
        won = text.strip().removesuffix("<|im_end|>").strip() == self.target
        return ("Right." if won else "Wrong, guess again."), float(won), won, self.guesses >= 3, {}


class FaultyMultiply:
    """The multiply tool of the agent task (TRL's contract), failing on purpose: it raises when the first factor is
    even, hangs when it ends in 5, and the first call of the run kills its actor's process (a file, the row's
    ``die_marker``, records that it did)."""

    def reset(self, **row) -> None:
        self.marker = Path(row["die_marker"])

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers.

        Args:
            a: The first factor.
            b: The second factor.
        """
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        if a % 2 == 0:
            raise RuntimeError("the calculator is offline")
        if a % 10 == 5:
            time.sleep(30)
        return multiply(a, b)
