"""The one explicit list of built-in algorithms. Adding one adds a line here; code outside the
package calls ``ALGORITHMS.register`` or names its class by import path
(``algorithm.name=my_algos:SignGRPO``). The driver never names an algorithm."""

from __future__ import annotations

from algorithms.base import Algorithm
from algorithms.dpo import DPO, OnlineDPO
from algorithms.grpo import GRPO
from algorithms.kd import KD
from algorithms.ppo import PPO
from algorithms.reward_models import ORM, PRM
from algorithms.sft import SFT, DistillSFT, OnPolicyDistill, RejectionSFT
from rlcore.plugins import Registry

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", {cls.name: cls for cls in (
    GRPO, PPO, DPO, OnlineDPO, SFT, RejectionSFT, DistillSFT, OnPolicyDistill, KD, ORM, PRM)})
