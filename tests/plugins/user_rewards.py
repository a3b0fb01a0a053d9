"""Rewards as users write them, including badly behaved ones, for the fault and contract tests."""

import asyncio
import os
import time
from pathlib import Path


def fragile(prompt, response, ground_truth):
    """Raises on the sample whose response is 'boom', scores 1 otherwise."""
    if response == "boom":
        raise RuntimeError("cannot score 'boom'")
    return 1.0


class Parts:
    """A batched class reward returning named parts."""

    def __init__(self, bonus=0.5):
        self.bonus = bonus

    def score(self, samples):
        return [{"correct": float(s.response == s.ground_truth), "bonus": self.bonus} for s in samples]


class AsyncLength:
    """An async batched reward (as a judge client would be)."""

    async def score(self, samples):
        await asyncio.sleep(0)
        return [float(len(s.response_ids)) for s in samples]


class Sleepy:
    def score(self, samples):
        time.sleep(3600)


class DiesOnce:
    """Kills its own process the first time (marker file), then scores 1."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def score(self, samples):
        if not self.marker.exists():
            self.marker.write_text("died")
            os._exit(1)
        return [1.0] * len(samples)


class WrongShape:
    def score(self, samples):
        return [1.0] * (len(samples) + 1)


class WrongType:
    def score(self, samples):
        return ["high"] * len(samples)


class FailsToStart:
    """Its constructor raises, as a reward whose model folder is missing would."""

    def __init__(self):
        raise FileNotFoundError("no model at /nowhere\n(export one first)")

    def score(self, samples):
        return [1.0] * len(samples)
