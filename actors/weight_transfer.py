"""The policy's weights into colocated vLLM engines through vLLM's weight-transfer API (``trainer.placement=colocated``).

GPU only: CUDA IPC needs the learner rank and the vLLM engine on the same GPU.
Each learner rank gathers every full parameter on its own GPU (FSDP2's
``full_tensor``, a collective, one parameter at a time), cast to the rollout
dtype, and exports a CUDA IPC handle of it; vLLM's trainer-side engine
all-gathers the handles over the learner group, and rank 0 hands them to every
rollout worker, each of which loads the tensors of its own GPU in place. The
engine packs the tensors into bounded buffers, so no more than one buffer of
weights exists beside the model. Nothing goes through Ray's object store.

The vLLM side of each call is the engine's worker method of the same name
(``init_weight_transfer_engine``, ``start_weight_update``, ``update_weights``,
``finish_weight_update``), reached through ``RolloutWorker`` (``actors.rollout``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource, materialize_full_tensor


class LearnerWeights(WeightSource):
    """The learner's parameters under their Hugging Face names, each gathered whole and cast to ``dtype`` when the
    transfer reaches it (every rank iterates in the same order: the gathers are collectives)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        self.model, self.dtype = model, dtype

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(name, self.dtype, tuple(p.shape)) for name, p in self.model.named_parameters()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in self.model.named_parameters():
            yield name, materialize_full_tensor(p.detach()).to(self.dtype)


class RolloutClient:
    """vLLM's weight-sync client protocol over the rollout workers (Ray actors): each call reaches every worker and
    waits for all. ``version`` tags the weights when an update finishes."""

    def __init__(self, workers: list, version: int = 0):
        self.workers, self.version = workers, version

    def _all(self, method: str, *args) -> None:
        import ray

        ray.get([getattr(w, method).remote(*args) for w in self.workers])

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._all("init_weight_transfer", init_info)

    def start_weight_update(self) -> None:
        self._all("start_weight_update")

    def update_weights(self, update_info) -> None:
        self._all("receive_weights", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", self.version)

    def shutdown_weight_transfer_engine(self) -> None:
        return None  # the engines go with their workers


def ipc_sender(model: torch.nn.Module, rank: int, dtype: torch.dtype, client: RolloutClient):
    """vLLM's trainer-side CUDA IPC engine for this learner rank (rank 0 drives the rollout workers); its first call
    tells the workers' engines how the tensors are packed."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

    return IPCTrainerWeightTransferEngine.trainer_init(IPCTrainerInitInfo(rank=rank, packed=True), client=client,
                                                      source=LearnerWeights(model, dtype))
