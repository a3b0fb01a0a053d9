"""A user's reward, kept outside the framework, shipped with ``ray job submit --working-dir``.

    ray job submit --address http://127.0.0.1:8265 --working-dir examples -- \
        python -m launch.train --config /path/to/rlcore/launch/configs/grpo_arithmetic.yaml \
        'reward.terms=[{name: exact_match}, {name: my_rewards:CloseEnough, weight: 0.5, num_workers: 2, args: {tolerance: 2}}]'

(``launch`` comes from the installed framework; ``my_rewards`` from the
working directory, which Ray ships to every worker.)
"""

from dataclasses import dataclass


@dataclass
class CloseEnoughOptions:
    tolerance: int = 2
    """Distance from the answer at which the credit reaches 0, minus one."""


class CloseEnough:
    """Partial credit for near misses: 1 when exact, falling linearly to 0 at ``tolerance + 1`` away."""

    Options = CloseEnoughOptions  # its args are checked and typed before any worker starts

    def __init__(self, tolerance: int = 2):
        self.tolerance = tolerance

    def score(self, samples):
        out = []
        for s in samples:
            try:
                distance = abs(int(s.response.strip()) - int(s.ground_truth))
            except ValueError:
                out.append({"close": 0.0, "_parsed": 0.0})
                continue
            out.append({"close": max(0.0, 1.0 - distance / (self.tolerance + 1)), "_parsed": 1.0})
        return out
