"""Learner: one rank of the FSDP2-sharded policy, in a torch.distributed group.

``learner.world_size`` learners form one process group (gloo on CPU, nccl on
CUDA). Each rank gets an equal slice of the batch, computes the algorithm's
loss on its micro-batches, and FSDP averages the gradients across ranks. The
same class runs under Ray (``actors.groups.LearnerGroup``) or under torchrun
(``Learner.from_env``).

Loss aggregation is per rank and per micro-batch (verl does the same); with
equal slices this is the global mean for the sequence-level modes and close
to it for ``token-mean``.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist

from rlcore.batch import RolloutBatch
from rlcore.config import Config
from rlcore.sequences import response_logprobs


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


class Learner:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int):
        from algorithms import get_algorithm_class

        self.cfg, self.model_path, self.rank, self.world_size = cfg, model_path, rank, world_size
        self.algorithm = get_algorithm_class(cfg.algorithm.name)(cfg)
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.model = self.optimizer = self.scheduler = None

    # ---- set-up ---------------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        return free_address()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group, then build the sharded model and optimizer."""
        from torch.distributed.fsdp import fully_shard

        from actors.reference import load_causal_lm

        backend = self.cfg.learner.backend
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
        torch.manual_seed(self.cfg.trainer.seed)
        model = load_causal_lm(self.model_path, self.cfg.model.dtype, self.device)
        # Shard each decoder layer, then the root (embeddings, norm, head): the FSDP2 recipe.
        for layer in getattr(getattr(model, "model", model), "layers", []):
            fully_shard(layer)
        fully_shard(model)
        self.model = model
        self.pad_id = model.config.pad_token_id or 0
        lc = self.cfg.learner
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lc.lr, weight_decay=lc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / lc.warmup_steps) if lc.warmup_steps else 1.0)
        self.rng = random.Random(self.cfg.trainer.seed + self.rank)

    @classmethod
    def from_env(cls, cfg: Config, model_path: str) -> Learner:
        """Under torchrun: rank, world size and the master address come from the environment."""
        learner = cls(cfg, model_path, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        learner.setup(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
        return learner

    # ---- training -------------------------------------------------------------------------
    def _logprobs(self, batch: RolloutBatch, with_entropy: bool):
        return response_logprobs(self.model, batch.prompt_ids, batch.response_ids, pad_id=self.pad_id,
                                 width=batch.response_mask.shape[1], temperature=self.cfg.rollout.temperature,
                                 with_entropy=with_entropy)

    @torch.no_grad()
    def logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] current-policy log-probs of this rank's slice, 0 on padding."""
        mb = self.cfg.learner.micro_batch_size
        parts = [self._logprobs(batch.select(range(s, min(s + mb, len(batch)))), False)[0].float().cpu()
                 for s in range(0, len(batch), mb)]
        return torch.cat(parts) * batch.response_mask

    def train_step(self, batch: RolloutBatch) -> dict[str, float]:
        """PPO-style updates on this rank's slice: ``ppo_epochs`` passes over shuffled mini-batches."""
        start = time.perf_counter()
        self.model.train()
        batch.old_logprobs = self.logprobs(batch)
        ac, lc = self.cfg.algorithm, self.cfg.learner
        mini = ac.mini_batch_size // self.world_size
        sums: dict[str, float] = {}
        count = 0
        grad_norms = []
        for _ in range(ac.ppo_epochs):
            order = list(range(len(batch)))
            self.rng.shuffle(order)
            for m0 in range(0, len(batch), mini):
                minibatch = batch.select(order[m0:m0 + mini])
                for u0 in range(0, len(minibatch), lc.micro_batch_size):
                    micro = minibatch.select(range(u0, min(u0 + lc.micro_batch_size, len(minibatch))))
                    logprobs, entropy = self._logprobs(micro, with_entropy=True)
                    micro = _to_device(micro, self.device)
                    loss, metrics = self.algorithm.loss(logprobs.float(), entropy, micro)
                    (loss * len(micro) / len(minibatch)).backward()
                    _accumulate(sums, metrics)
                    count += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), lc.max_grad_norm)
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

    # ---- weights out ----------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Gathered full weights with Hugging Face names on rank 0 (None elsewhere). Collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.rank == 0 else None

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

    def export(self, path: str) -> None:
        """Write the policy as a Hugging Face folder (weights, config, tokenizer). Collective."""
        sd = self.full_state_dict()
        if self.rank == 0:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            config = AutoConfig.from_pretrained(self.model_path)
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, self.cfg.model.dtype))
            model.load_state_dict(sd)
            model.save_pretrained(path)
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)
        dist.barrier()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _to_device(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    if device.type == "cpu":
        return batch
    for name in ("response_mask", "old_logprobs", "ref_logprobs", "advantages", "rollout_logprobs"):
        value = getattr(batch, name)
        if value is not None:
            setattr(batch, name, value.to(device))
    return batch


def _accumulate(sums: dict[str, float], metrics: dict[str, float]) -> None:
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v)
