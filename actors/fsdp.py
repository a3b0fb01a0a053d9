"""FSDPWorker: one rank of an FSDP2-sharded model with its optimizer, in a torch.distributed group.

The policy ``Learner`` and the PPO ``Critic`` are both ranks of such a group;
this base holds what they share: joining the group, sharding, the optimizer,
the mini-batch / micro-batch update loop, and sharded checkpoints. Each rank
gets an equal, contiguous slice of the batch; FSDP averages the gradients.

Mini-batches are made of whole groups (all samples of one prompt, or one
chosen/rejected pair), shuffled at the group level.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from rlcore.batch import RolloutBatch, group_runs
from rlcore.config import Config, LearnerConfig

# (micro-batch on this rank's device) -> (loss, metrics)
LossFn = Callable[[RolloutBatch], "tuple[torch.Tensor, dict[str, float]]"]


def free_address() -> tuple[str, int]:
    """This node's IP and a free TCP port, for rank 0 to host the process group."""
    host = "127.0.0.1"
    if _ray_initialized():
        import ray.util

        host = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


def _ray_initialized() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:
        return False


class FSDPWorker:
    group_cfg: LearnerConfig

    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int, group_cfg: LearnerConfig):
        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.group_cfg = group_cfg
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.model = self.optimizer = self.scheduler = None

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    # ---- set-up ---------------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        return free_address()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group, then build the sharded model and optimizer."""
        from torch.distributed.fsdp import fully_shard

        backend = self.group_cfg.backend
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
        torch.manual_seed(self.cfg.trainer.seed)
        model = self.build_model()
        # Shard each decoder layer, then the root (embeddings, norm, head): the FSDP2 recipe.
        for layer in getattr(getattr(model, "model", model), "layers", []):
            fully_shard(layer)
        fully_shard(model)
        self.model = model
        self.pad_id = model.config.pad_token_id or 0
        gc = self.group_cfg
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=gc.lr, weight_decay=gc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / gc.warmup_steps) if gc.warmup_steps else 1.0)
        self.rng = random.Random(self.cfg.trainer.seed + self.rank)

    @classmethod
    def from_env(cls, cfg: Config, model_path: str) -> FSDPWorker:
        """Under torchrun: rank, world size and the master address come from the environment."""
        worker = cls(cfg, model_path, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        worker.setup(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
        return worker

    # ---- the update loop ------------------------------------------------------------------
    def micro_batches(self, batch: RolloutBatch):
        mb = self.group_cfg.micro_batch_size
        return (batch.select(range(s, min(s + mb, len(batch)))) for s in range(0, len(batch), mb))

    def optimize(self, batch: RolloutBatch, loss_fn: LossFn) -> dict[str, float]:
        """``ppo_epochs`` passes over shuffled mini-batches of whole groups; metrics averaged."""
        start = time.perf_counter()
        self.model.train()
        ac = self.cfg.algorithm
        mini = ac.mini_batch_size // self.world_size
        sums: dict[str, float] = {}
        count, grad_norms = 0, []
        for _ in range(ac.ppo_epochs):
            order = shuffled_groups(batch.group_ids, self.rng)
            for m0 in range(0, len(batch), mini):
                minibatch = batch.select(order[m0:m0 + mini])
                for micro in self.micro_batches(minibatch):
                    loss, metrics = loss_fn(_to_device(micro, self.device))
                    (loss * len(micro) / len(minibatch)).backward()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.group_cfg.max_grad_norm)
                if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
                    grad_norm = grad_norm.full_tensor()
                grad_norms.append(float(grad_norm))
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        out = {k: v / count for k, v in sums.items()}
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["lr"] = self.scheduler.get_last_lr()[0]
        out["learner_tokens"] = float(batch.num_response_tokens * ac.ppo_epochs)
        out["learner_seconds"] = time.perf_counter() - start
        return out

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, path: str) -> None:
        """Sharded model + optimizer state with torch.distributed.checkpoint. Collective."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        if self.rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict()}, Path(path) / "scheduler.pt")
        dist.barrier()

    def load_checkpoint(self, path: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(torch.load(Path(path) / "scheduler.pt")["scheduler"])

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def shuffled_groups(group_ids: torch.Tensor, rng: random.Random) -> list[int]:
    """Sample indices with whole groups (runs of equal consecutive ids) shuffled as units."""
    runs = [list(range(a, b)) for a, b in group_runs(group_ids.tolist())]
    rng.shuffle(runs)
    return [i for run in runs for i in run]


_DEVICE_FIELDS = ("response_mask", "old_logprobs", "ref_logprobs", "advantages", "rollout_logprobs",
                  "values", "returns", "scores")


def _to_device(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    if device.type == "cpu":
        return batch
    for name in _DEVICE_FIELDS:
        value = getattr(batch, name)
        if value is not None:
            setattr(batch, name, value.to(device))
    return batch
