"""Ray actor groups: each wraps one role class and spreads work over its actors.

The driver talks to these groups only; each method sends work to every actor
of the group at once and waits for all of them.
"""

from __future__ import annotations

import ray
import torch

from actors.critic import Critic
from actors.learner import Learner
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import RolloutWorker
from rlcore.batch import RolloutBatch
from rlcore.config import Config, LearnerConfig
from rlcore.data import PromptRow


def _split(items: list, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of ``parts`` contiguous slices as even as possible (some may be empty)."""
    base, extra = divmod(len(items), parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


class RolloutGroup:
    """``rollout.num_workers`` vLLM actors; prompts are spread evenly over them."""

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.rollout
        actor = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus)(RolloutWorker)
        self.workers = [actor.remote(model_path, rc, seed=cfg.trainer.seed + i) for i in range(rc.num_workers)]
        ray.get([w.get_version.remote() for w in self.workers])  # wait until every engine is up

    def generate(self, prompts: list[PromptRow], group_ids: list[int], n: int, greedy: bool = False) -> RolloutBatch:
        futures = [w.generate.remote(prompts[a:b], group_ids[a:b], n, greedy)
                   for w, (a, b) in zip(self.workers, _split(prompts, len(self.workers))) if b > a]
        return RolloutBatch.concat(ray.get(futures))

    def update_weights(self, state_dict_ref: ray.ObjectRef, version: int) -> None:
        # The ObjectRef goes to every worker; Ray moves the tensors once per node, not via the driver.
        ray.get([w.update_weights.remote(state_dict_ref, version) for w in self.workers])


class RewardGroup:
    """``reward.num_workers`` reward actors; samples are spread evenly over them."""

    def __init__(self, cfg: Config):
        actor = ray.remote(num_cpus=cfg.reward.num_cpus)(RewardWorker)
        self.workers = [actor.remote(list(cfg.reward.terms)) for _ in range(cfg.reward.num_workers)]

    def score(self, batch: RolloutBatch) -> None:
        """Fill ``batch.scores`` and ``batch.reward_terms``."""
        bounds = [(a, b) for a, b in _split(batch.prompts, len(self.workers)) if b > a]
        results = ray.get([w.score.remote(batch.prompts[a:b], batch.responses[a:b], batch.answers[a:b])
                           for w, (a, b) in zip(self.workers, bounds)])
        batch.scores = torch.tensor([s for totals, _ in results for s in totals], dtype=torch.float32)
        names = results[0][1].keys()
        batch.reward_terms = {k: torch.tensor([v for _, terms in results for v in terms[k]], dtype=torch.float32)
                              for k in names}


class ReferenceGroup:
    """One reference actor (the frozen initial policy)."""

    def __init__(self, cfg: Config, model_path: str):
        rc = cfg.reference
        actor = ray.remote(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus)(ReferenceWorker)
        self.worker = actor.remote(model_path, cfg.model.dtype, cfg.rollout.temperature, rc.micro_batch_size)

    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        return ray.get(self.worker.logprobs.remote(batch))


class FSDPGroup:
    """``world_size`` ranks of one FSDP role forming one torch.distributed group."""

    def __init__(self, worker_cls: type, cfg: Config, model_path: str, group_cfg: LearnerConfig):
        actor = ray.remote(num_cpus=group_cfg.num_cpus, num_gpus=group_cfg.num_gpus)(worker_cls)
        self.ranks = [actor.remote(cfg, model_path, rank, group_cfg.world_size) for rank in range(group_cfg.world_size)]
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([r.setup.remote(addr, port) for r in self.ranks])

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """Each rank trains on an equal slice; metrics are averaged over ranks (tokens summed)."""
        results = ray.get([r.train_step.remote(part) for r, part in zip(self.ranks, batch.chunks(len(self.ranks)))])
        out = {k: sum(m[k] for m in results) / len(results) for k in results[0]}
        out["learner_tokens"] = sum(m["learner_tokens"] for m in results)
        return out

    def _per_rank(self, method: str, batch: RolloutBatch) -> torch.Tensor:
        """Run a per-token query on equal slices over all ranks (FSDP forwards are collective)."""
        parts = batch.chunks(len(self.ranks))
        return torch.cat(ray.get([getattr(r, method).remote(p) for r, p in zip(self.ranks, parts)]))

    def save_checkpoint(self, path: str) -> None:
        ray.get([r.save_checkpoint.remote(path) for r in self.ranks])

    def load_checkpoint(self, path: str) -> None:
        ray.get([r.load_checkpoint.remote(path) for r in self.ranks])

    def shutdown(self) -> None:
        ray.get([r.shutdown.remote() for r in self.ranks])


class LearnerGroup(FSDPGroup):
    """The policy: ``learner.world_size`` learner ranks."""

    def __init__(self, cfg: Config, model_path: str):
        super().__init__(Learner, cfg, model_path, cfg.learner)

    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        return self._per_rank("logprobs", batch)

    def state_dict_ref(self) -> ray.ObjectRef:
        """An ObjectRef to the gathered full weights (every rank takes part; rank 0 returns them)."""
        refs = [r.full_state_dict.remote() for r in self.ranks]
        ray.get(refs[1:])  # surfaces any rank's error here
        ray.wait(refs[:1])
        return refs[0]

    def export(self, path: str) -> None:
        ray.get([r.export.remote(path) for r in self.ranks])


class CriticGroup(FSDPGroup):
    """The PPO value model: ``critic.world_size`` critic ranks."""

    def __init__(self, cfg: Config, model_path: str):
        super().__init__(Critic, cfg, model_path, cfg.critic)

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        return self._per_rank("values", batch)
