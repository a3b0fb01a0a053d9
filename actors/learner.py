"""LearnerRank: one rank of an FSDP2-sharded learner group, whatever its model and loss.

A learner group is ``settings.world_size`` ranks forming one torch.distributed
group (gloo on CPU, nccl on CUDA). The group's model kind (``actors.models``)
builds the model and computes its outputs; the algorithm's loss method named
by the group's ``LearnerSpec`` turns them into a loss. The policy (``actor``)
and PPO's critic are both such groups. The same class runs under Ray
(``actors.groups.LearnerGroup``) or under torchrun (``LearnerRank.from_env``).

Each rank gets whole groups, as many samples as every other rank and about as
many tokens (``rlcore.batch.rank_parts``). Mini-batches are made of whole
groups (all samples of one prompt, or one chosen/rejected pair), shuffled at
the group level with a seed of (run seed, group name, rank, step), so a resumed
run shuffles as the uninterrupted one did.
Loss aggregation is per micro-batch (verl does the same); the micro-batch losses
of a mini-batch are weighted by their share of its samples, or of its response
tokens (``LearnerSpec.loss_weight``), counted over all the ranks, so the update is
the same however the samples fall on them. Micro-batches hold ``micro_batch_size``
samples, or, with a token budget (``max_tokens_per_micro_batch`` of the settings or
of the ``LearnerSpec``), as many samples of about the same length as fit in it, in
as many micro-batches on every rank.

Memory: the weights, gradients and AdamW state are float32 master copies; with
``model.dtype`` bfloat16 or float16 the passes compute in it (FSDP2's
``MixedPrecisionPolicy``, gradients reduced in float32). ``activation_checkpointing``
recomputes each decoder layer in the backward pass, ``cpu_offload`` keeps the shards in
CPU memory (GPU only), and log-probs come from the hidden states in chunks of
``logits_chunk_tokens`` (``rlcore.sequences``). ``packing`` feeds a micro-batch as one
padding-free row.
"""

from __future__ import annotations

import math
import os
import random
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from actors.models import autocast, set_threads, shard
from actors.reference import ReferenceWorker
from algorithms.base import LearnerSpec
from rlcore.batch import (
    RolloutBatch,
    group_runs,
    halved,
    sequence_lengths,
    token_budget_parts,
    trim,
)
from rlcore.config import Config
from rlcore.functional import logprob_gap
from rlcore.lora import adapter_weights, merge_lora
from rlcore.schedule import lr_multiplier


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


class LearnerRank:
    def __init__(self, cfg: Config, algorithm: Any, name: str, spec: LearnerSpec, model_cls: type, rank: int,
                 world_size: int, reference_path: str | None = None):
        self.cfg, self.algorithm, self.name, self.spec = cfg, algorithm, name, spec
        self.settings = spec.settings
        self.kind = model_cls(cfg, spec.settings, **spec.model_options)
        self.model_path = spec.model_path or cfg.model.path
        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.model = self.optimizer = self.scheduler = None
        self.transfer = None  # colocated placement: vLLM's weight-transfer engine, made on the first send
        self.reference_path = reference_path  # reference.host=policy: a frozen reference beside the model
        self.reference = None

    # ---- set-up ---------------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        return free_address()

    def setup(self, address: tuple[str, int]) -> None:
        """Join the process group hosted at ``address`` (rank 0's), then build the sharded model and optimizer."""
        from torch.distributed.fsdp import CPUOffloadPolicy

        master_addr, master_port = address

        backend = self.settings.backend
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
        hosts = [None] * self.world_size
        dist.all_gather_object(hosts, socket.gethostname())
        set_threads(self.settings.num_threads, self.device, sharers=hosts.count(socket.gethostname()))
        torch.manual_seed(self.cfg.trainer.seed)
        s = self.settings
        model = self.kind.build(self.model_path, self.device, dtype="float32")  # the master weights
        if s.lora_rank:
            model = add_lora(model, s)
        if s.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        offload = CPUOffloadPolicy() if s.cpu_offload and self.device.type == "cuda" else None
        shard(model, mixed_precision_policy(self.cfg.model.dtype), offload)
        self.model = model
        trained = [p for p in model.parameters() if p.requires_grad]  # all of them, or the LoRA adapter's
        self.optimizer = torch.optim.AdamW(trained, lr=s.lr, weight_decay=s.weight_decay)
        batch = self.cfg.data.prompts_per_step * self.algorithm.group_size()
        total = self.cfg.trainer.total_steps * -(-batch // s.mini_batch_size) * s.epochs  # optimizer steps of the run
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_multiplier(k, s.warmup_steps, total, s.lr_schedule, s.min_lr_ratio))
        if self.reference_path is not None:
            self.reference = ReferenceWorker(self.cfg, self.reference_path, own_process=False)

    @classmethod
    def from_env(cls, cfg: Config, algorithm: Any, name: str, spec: LearnerSpec, model_cls: type) -> LearnerRank:
        """Under torchrun: rank, world size and the master address come from the environment."""
        worker = cls(cfg, algorithm, name, spec, model_cls, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        worker.setup((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
        return worker

    # ---- forward and update ---------------------------------------------------------------
    def parts(self, batch: RolloutBatch) -> list[list[int]]:
        """This rank's micro-batches as sample indices: ``settings.micro_batch_size`` samples each, in order; or by a
        token budget, longest first, in as many parts as the rank that needs the most (each pass is a collective:
        FSDP gathers the weights in it, so every rank runs as many). Collective with a budget."""
        budget = self.token_budget
        if budget is None:
            size = self.settings.micro_batch_size
            return [list(range(a, min(a + size, len(batch)))) for a in range(0, len(batch), size)]
        lengths, packed = sequence_lengths(batch), self.kind.packed
        parts = token_budget_parts(lengths, budget, packed=packed)
        return halved(parts, int(self.reduced(len(parts), dist.ReduceOp.MAX)), lengths, packed)

    @property
    def token_budget(self) -> int | None:
        """Tokens per micro-batch: the settings' ``max_tokens_per_micro_batch``, else the algorithm's, else None."""
        return self.settings.max_tokens_per_micro_batch or self.spec.max_tokens_per_micro_batch

    @torch.no_grad()
    def forward(self, batch: RolloutBatch, output: str) -> torch.Tensor:
        """[B, T] model output ``output`` for this rank's slice under the current weights, 0 on padding. Collective."""
        out = torch.zeros_like(batch.response_mask)
        with autocast(self.device, self.settings.mixed_precision):
            for part in self.parts(batch):
                micro = _to_device(trim(batch.select(part)), self.device)
                values = self.kind.forward(self.model, micro, (output,))[output].float().cpu()  # [b, t <= T]
                out[torch.tensor(part), :values.shape[1]] = values
        return out * batch.response_mask

    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[B, T] the frozen reference's log-probs of this rank's slice (``reference.host=policy``). Not collective."""
        return self.reference.logprobs(batch)

    def accumulate(self, minibatch: RolloutBatch, loss_fn) -> tuple[list[dict[str, float]], list[tuple], bool]:
        """Forward and backward passes over the micro-batches of one mini-batch; the gradients add up to the
        mini-batch's over all ranks (``LearnerSpec.loss_weight``: each micro-batch's loss weighted by its share of
        the group's samples or response tokens in this mini-batch, whatever each rank holds). Returns each
        micro-batch's metrics, (log-probs, the sampler's, mask) of those that carry the sampler's log-probs, and
        whether every loss was finite. Collective."""
        by_tokens = self.spec.loss_weight == "tokens"
        local = float(minibatch.response_mask.sum()) if by_tokens else len(minibatch)
        # FSDP averages the ranks' gradients: world_size / the group's total makes that average the shares' sum
        scale = self.world_size / max(self.reduced(local), 1.0)
        metrics, sampled, finite = [], [], True
        for part in self.parts(minibatch):
            micro = _to_device(trim(minibatch.select(part)), self.device)
            share = float(micro.response_mask.sum()) if by_tokens else len(micro)
            with autocast(self.device, self.settings.mixed_precision):
                outputs = self.kind.forward(self.model, micro)
            loss, micro_metrics = loss_fn(outputs, micro)
            if "logprobs" in outputs and micro.rollout_logprobs is not None:
                sampled.append((outputs["logprobs"].detach(), micro.rollout_logprobs, micro.response_mask))
            (loss * share * scale).backward()
            finite = finite and bool(torch.isfinite(loss.detach()).all())
            metrics.append(micro_metrics)
        return metrics, sampled, finite

    def reduced(self, value: float, op=dist.ReduceOp.SUM) -> float:
        """``value`` reduced over the group's ranks (``value`` itself with one rank). Collective."""
        if self.world_size == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.item()

    def everywhere(self, local: bool) -> bool:
        """Whether ``local`` holds on every rank of the group. Collective."""
        return self.reduced(0.0 if local else 1.0, dist.ReduceOp.MAX) == 0.0

    def train_step(self, batch: RolloutBatch, step: int, state: dict) -> dict[str, float]:
        """``epochs`` passes over shuffled mini-batches of whole groups with the algorithm's loss; metrics averaged.

        ``state`` is the driver-side algorithm's ``state_dict()``: the loss sees what the driver sees.
        A mini-batch with a non-finite loss (on any rank) or gradient norm updates nothing:
        ``skipped_steps`` counts those optimizer steps, ``grad_norm`` averages the finite norms.
        When the batch carries the sampler's log-probs, ``rollout_gap/…`` compares them with this
        rank's log-probs before its first optimizer step (``rlcore.functional.logprob_gap``).
        """
        self.algorithm.load_state_dict(state)
        loss_fn = getattr(self.algorithm, self.spec.loss)
        self.model.train()
        s = self.settings
        mini = s.mini_batch_size // self.world_size
        rng = random.Random(f"{self.cfg.trainer.seed}/{self.name}/{self.rank}/{step}")
        sums: dict[str, float] = {}
        count, grad_norms, skipped = 0, [], 0
        before_update = []  # (log-probs, the sampler's, mask) of the micro-batches before the first optimizer step
        for _ in range(s.epochs):
            order = shuffled_groups(batch.group_ids, rng)
            for m0 in range(0, len(batch), mini):
                minibatch = batch.select(order[m0:m0 + mini])
                micro_metrics, sampled, finite_loss = self.accumulate(minibatch, loss_fn)
                if not grad_norms:
                    before_update += sampled
                for metrics in micro_metrics:
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    count += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
                if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
                    grad_norm = grad_norm.full_tensor()
                grad_norms.append(float(grad_norm))
                # every rank sees the same global norm and, gathered, the same loss check: all skip together
                if self.everywhere(finite_loss) and math.isfinite(grad_norms[-1]):
                    self.optimizer.step()
                    self.scheduler.step()
                else:  # a non-finite loss or gradient: the update would ruin the weights
                    skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
        out = {k: v / count for k, v in sums.items()}
        finite = [g for g in grad_norms if math.isfinite(g)]
        out["grad_norm"] = sum(finite) / len(finite) if finite else float("nan")
        out["skipped_steps"] = float(skipped)
        out["lr"] = self.scheduler.get_last_lr()[0]
        if before_update:  # the same weights the samples should have come from: any gap is the sampler's
            width = max(lp.shape[1] for lp, _, _ in before_update)  # token-budget micro-batches are cut to their own
            gap = logprob_gap(*(torch.cat([_pad_to(t, width) for t in parts]) for parts in zip(*before_update)))
            out.update({f"rollout_gap/{k}": v for k, v in gap.items()})
        return out

    # ---- weights out ----------------------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Gathered full weights with Hugging Face names on rank 0 (None elsewhere), a LoRA adapter merged in.
        Collective."""
        sd = self.gathered()
        return None if sd is None else self.merged(sd)

    def send_weights(self, workers: list, version: int) -> None:
        """Colocated placement (GPU only): the weights, in ``model.dtype``, to the vLLM engines beside the ranks through
        CUDA IPC (``actors.weight_transfer``); rank 0 drives ``workers`` and tags the weights ``version``. Collective."""
        from actors.weight_transfer import RolloutClient, ipc_sender

        if self.transfer is None:
            self.transfer = ipc_sender(self.model, self.rank, getattr(torch, self.cfg.model.dtype), RolloutClient(workers))
        self.transfer.client.workers, self.transfer.client.version = workers, version
        self.transfer.send_weights()

    def merged(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sd`` under the base model's names, the LoRA adapter (if any) merged in: W + lora_alpha / lora_rank · BA;
        without the modules only the model kind's training uses (``ModelKind.weights``)."""
        s = self.settings
        return self.kind.weights(merge_lora(sd, s.lora_alpha / s.lora_rank) if s.lora_rank else sd)

    def gathered(self) -> dict[str, torch.Tensor] | None:
        """Every parameter gathered whole on rank 0 under the module's own names (peft's, with an adapter). Collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if self.rank == 0 else None

    def export(self, path: str) -> None:
        """Write the model as a Hugging Face folder (weights, config, tokenizer); with LoRA, the merged model and the
        adapter alone in ``path/adapter`` (peft's format). Collective."""
        sd = self.gathered()
        if self.rank == 0:
            self.kind.save(self.merged(sd), self.model_path, path)
            if self.settings.lora_rank:
                save_adapter(adapter_weights(sd), self.settings, self.model_path, Path(path) / "adapter")
        dist.barrier()

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


def add_lora(model: torch.nn.Module, settings) -> torch.nn.Module:
    """``model`` with peft's LoRA layers in place of its target modules (``settings.lora_*``) and every other weight
    frozen; the same Hugging Face module tree, so FSDP shards and the model kinds read it as before."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(settings)).get_base_model()


def lora_config(settings):
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                      target_modules=list(settings.lora_target_modules), lora_dropout=0.0)


def save_adapter(weights: dict[str, torch.Tensor], settings, base_path: str, out_dir: Path) -> None:
    """The adapter as peft writes it (``adapter_config.json``, ``adapter_model.safetensors``)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config = lora_config(settings)
    config.base_model_name_or_path = base_path
    config.save_pretrained(str(out_dir))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out_dir / "adapter_model.safetensors"))


def mixed_precision_policy(dtype: str):
    """FSDP2's policy for compute in ``dtype`` over float32 master weights: parameters cast when gathered, gradients
    reduced in float32. None for float32 (no casts)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if dtype == "float32":
        return None
    return MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)


def shuffled_groups(group_ids: torch.Tensor, rng: random.Random) -> list[int]:
    """Sample indices with whole groups (runs of equal consecutive ids) shuffled as units."""
    runs = [list(range(a, b)) for a, b in group_runs(group_ids.tolist())]
    rng.shuffle(runs)
    return [i for run in runs for i in run]


def _to_device(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    if device.type == "cpu":
        return batch
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            setattr(batch, name, value.to(device))
    return batch


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """``[b, t]`` right-padded with zeros to ``[b, width]`` (the same tensor when it is that wide already)."""
    return t if t.shape[1] == width else torch.nn.functional.pad(t, (0, width - t.shape[1]))
