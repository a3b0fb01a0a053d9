"""Where the roles run, and how the policy's new weights reach the rollout workers (``trainer.placement``).

* ``Separate`` (the default, and the only choice on CPU): each role asks Ray
  for its own CPUs and GPUs. After an update rank 0 gathers the full weights
  into Ray's object store and every rollout worker loads them.
* ``Colocated`` (GPU only): the roles share the GPUs. A Ray placement group
  holds one bundle per learner rank, each with one GPU; rank i of every learner
  group and rollout worker i run in bundle i, and the reference in bundle 0.
  Each of them takes an equal fraction of the GPU (``bundles``). vLLM sleeps
  from the end of a step's rollout until the weight sync (``rest``; level 1:
  its weights wait in CPU memory, its KV cache is dropped). The sync wakes
  vLLM's weights, the learner ranks hand theirs over GPU to GPU through CUDA
  IPC (``actors.weight_transfer``), and vLLM wakes the rest for the next
  rollout (``push``); a rollout worker asleep when asked to generate wakes
  first. Nothing goes through the object store.

Both have the same three methods, so the sources call them without knowing
which one runs.
"""

from __future__ import annotations

import math

import ray

from rlcore.config import Config, ConfigError

def bundles(cfg: Config, learner_groups: dict[str, object]) -> tuple[list[dict[str, float]], float]:
    """The placement group's bundles for a colocated run, and the GPU fraction each actor in one takes.

    ``learner_groups`` maps each learner group's name to its settings (``num_cpus``, ``world_size``). Bundle i
    holds rank i of every learner group, rollout worker i and, in bundle 0, the reference. Its CPUs are those
    actors' ``num_cpus``; its GPU is split equally among the most actors any bundle holds (rounded down to Ray's
    1e-4 resolution).
    """
    count = cfg.learner.world_size
    reference = cfg.reference.enabled
    out = []
    for i in range(count):
        cpus = cfg.rollout.num_cpus + sum(s.num_cpus for s in learner_groups.values() if i < s.world_size)
        if reference and i == 0:
            cpus += cfg.reference.num_cpus
        out.append({"GPU": 1.0, "CPU": cpus})
    actors = len(learner_groups) + 1 + int(reference)
    return out, math.floor(10_000 / actors) / 10_000


class Separate:
    """``trainer.placement=separate``: each role where its own settings put it; weights through the object store."""

    shares_gpus = False
    """Whether the rollout workers share GPUs with the learner ranks (one worker per rank, vLLM asleep between rollouts)."""

    def options(self, role: str, index: int) -> dict:
        """Ray actor options for actor ``index`` of ``role``, beyond its settings': none."""
        return {}

    def rest(self, rollout) -> None:
        """After a step's rollout: nothing to free."""

    def push(self, actor, rollout, version: int) -> None:
        """The policy's new weights to every rollout worker, tagged ``version``."""
        rollout.update_weights(actor.state_dict_ref(), version)


class Colocated:
    """``trainer.placement=colocated``: every role on the GPUs of one placement group (GPU only)."""

    shares_gpus = True

    def __init__(self, group, share: float, count: int):
        self.group, self.share, self.count = group, share, count

    @classmethod
    def start(cls, cfg: Config, learner_groups: dict[str, object]) -> Colocated:
        """Reserve the GPUs: the placement group of ``bundles``. Raises ConfigError when the cluster has too few."""
        from ray.util.placement_group import placement_group

        specs, share = bundles(cfg, learner_groups)
        have = ray.cluster_resources().get("GPU", 0.0)
        if have < len(specs):
            raise ConfigError(f"trainer.placement=colocated needs {len(specs)} GPUs (one per learner rank, "
                              f"learner.world_size={len(specs)}); this Ray cluster has {have:g}: use "
                              "trainer.placement=separate")
        return cls(placement_group(specs, strategy="PACK"), share, len(specs))

    def options(self, role: str, index: int) -> dict:
        """Actor ``index`` of ``role`` in bundle ``index`` (the reference in bundle 0), with its share of the GPU."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"num_gpus": self.share, "scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=index % self.count)}

    def rest(self, rollout) -> None:
        """After a step's rollout: vLLM frees its weights and KV cache for the learners."""
        rollout.sleep()

    def push(self, actor, rollout, version: int) -> None:
        """Wake vLLM's weights, copy the learner's in over CUDA IPC, then wake the KV cache for the next rollout."""
        rollout.wake(["weights"])
        actor.send_weights(rollout.members(), version)
        rollout.wake()


SEPARATE = Separate()
"""The groups' default placement (``Separate`` holds no state)."""


def placement(cfg: Config, learner_groups: dict[str, object]) -> Separate | Colocated:
    """The placement ``trainer.placement`` names (Ray must be up)."""
    return Colocated.start(cfg, learner_groups) if cfg.trainer.placement == "colocated" else SEPARATE
