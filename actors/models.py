"""Model kinds: what a learner group (or the reference) builds and what its forward pass returns.

An algorithm names a kind per learner group (``LearnerSpec.model``); a new kind
is a new class registered here, or named by import path. A kind is built with
the run's config and the role's settings (``learner``, ``algorithm.critic`` or
``reference``: their ``packing`` and ``logits_chunk_tokens``), and has

* ``build(path, device, dtype=None) -> torch.nn.Module``, in ``dtype`` (default ``model.dtype``;
  the learners build float32 master weights): a Hugging Face model with ``.model.layers``,
  which FSDP shards one by one,
* ``forward(model, batch, wanted) -> {name: [B, T] tensor}`` for the response
  tokens of ``batch`` (its ``prompt_ids``, ``response_ids``, ``response_mask``),
  computing only the outputs in ``wanted``,
* ``weights(state_dict)``: the trained module's weights less any module only training
  uses (``causal_lm_kd``'s projections), which ``save`` and the rollout workers take,
* ``save(state_dict, source_path, out_dir)``: write the weights as a folder that
  ``build`` (and, for the policy, vLLM) loads.

A kind takes the run's config, the role's settings and, as keyword arguments, the
algorithm's ``LearnerSpec.model_options``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from rlcore.plugins import Registry
from rlcore.sequences import response_logprobs, response_logprobs_at, response_scores, response_values

if TYPE_CHECKING:
    from rlcore.batch import RolloutBatch
    from rlcore.config import Config


class ModelKind:
    """What the built-in kinds share: the dtype, and how sequences reach the model (``packing``)."""

    auto_class = "AutoModelForCausalLM"
    num_labels: int | None = None
    with_tokenizer = True

    layout = "padded"
    """How sequences reach the model (``rlcore.sequences.LAYOUTS``), decided by ``build`` from ``packing``."""

    def __init__(self, cfg: Config, settings=None):
        self.dtype = cfg.model.dtype
        self.packing = getattr(settings, "packing", "padded")
        self.chunk_tokens = getattr(settings, "logits_chunk_tokens", 0)

    @property
    def packed(self) -> bool:
        return self.layout == "packed"

    def config(self, path: str):
        """The Hugging Face config of the model at ``path``, with this kind's ``num_labels`` when it has one."""
        import transformers

        extra = {} if self.num_labels is None else {"num_labels": self.num_labels}
        return transformers.AutoConfig.from_pretrained(path, **extra)

    def build(self, path: str, device: torch.device | str = "cpu", dtype: str | None = None) -> torch.nn.Module:
        import transformers

        attention = attention_backend(device)
        if attention == "flash_attention_2" and self.packing == "grouped":
            attention = "sdpa"  # flash-attn takes no 4D mask
        # auto: flash-attn's variable-length kernel where it runs; elsewhere grouped or padded, per micro-batch
        self.layout = "packed" if self.packing == "auto" and attention == "flash_attention_2" else self.packing
        model = getattr(transformers, self.auto_class).from_pretrained(
            path, config=self.config(path), dtype=getattr(torch, dtype or self.dtype),
            attn_implementation=attention)
        return model.to(device)

    def weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights the exported model and the rollout workers take, out of the trained module's ``state_dict``:
        all of them, except a kind's modules that only its training uses."""
        return state_dict

    def save(self, state_dict: dict[str, torch.Tensor], source_path: str, out_dir: str) -> None:
        """The weights as a Hugging Face folder in ``model.dtype`` (with the tokenizer when ``with_tokenizer``)."""
        import transformers

        model = getattr(transformers, self.auto_class).from_config(self.config(source_path),
                                                                    dtype=getattr(torch, self.dtype))
        model.load_state_dict(state_dict)
        model.save_pretrained(out_dir)
        if self.with_tokenizer:
            transformers.AutoTokenizer.from_pretrained(source_path).save_pretrained(out_dir)


class CausalLM(ModelKind):
    """The policy: log-probs (``logprobs``) and entropy (``entropy``) of the response tokens at ``rollout.temperature``."""

    outputs = ("logprobs", "entropy")

    def __init__(self, cfg: Config, settings=None):
        super().__init__(cfg, settings)
        self.temperature = cfg.rollout.temperature

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        logprobs, entropy = as_forward(model, response_logprobs, batch.prompt_ids, batch.response_ids,
                                       pad_id=_pad_id(model), width=batch.response_mask.shape[1],
                                       temperature=self.temperature, with_entropy="entropy" in wanted,
                                       packing=self.layout, chunk_tokens=self.chunk_tokens)
        return {"logprobs": logprobs, "entropy": entropy}


class UntemperedCausalLM(CausalLM):
    """The policy's own distribution (temperature 1) whatever ``rollout.temperature`` samples with: log-probs and
    entropy of the response tokens, for supervised losses (SFT and distillation from samples), which train the
    model's distribution and not a tempered one."""

    def __init__(self, cfg: Config, settings=None):
        super().__init__(cfg, settings)
        self.temperature = 1.0


class DistillLM(UntemperedCausalLM):
    """The student of token-level distillation (``algorithms.kd``). With a teacher's top-k in the batch
    (``teacher_topk_ids`` and ``teacher_temperature``) it returns, besides the response tokens' log-probs at
    temperature 1 (the hard labels), its log-probs at the teacher's ids (``topk_logprobs`` ``[B, T, k]``) and the
    log of its mass on every other id (``tail_logprob``), both at the batch's distillation temperature. Without
    one (a held-out loss), what ``causal_lm_untempered`` returns.

    With ``hidden_layers`` (``[student_layer, teacher_layer]`` pairs) and the teacher's states in the batch
    (``teacher_hidden``) it also returns ``hidden`` ``[B, T, L, H_teacher]``: its states of those layers at the
    same positions, each through a linear projection to the teacher's width learned with the student (TinyBERT's
    W_h; the identity at first when the widths are equal). The projections live in the trained module as
    ``kd_projection`` (sharded, optimised and checkpointed with it) and are dropped from what is exported and synced
    to the rollout workers (``weights``).
    """

    outputs = ("logprobs", "topk_logprobs", "tail_logprob", "hidden")
    projection = "kd_projection"

    def __init__(self, cfg: Config, settings=None, hidden_layers: list[list[int]] = (),
                 teacher_path: str | None = None):
        super().__init__(cfg, settings)
        self.student_layers = tuple(pair[0] for pair in hidden_layers)
        self.teacher_path, self.cache_dir = teacher_path, cfg.trainer.cache_dir

    def build(self, path: str, device: torch.device | str = "cpu", dtype: str | None = None) -> torch.nn.Module:
        model = super().build(path, device, dtype)
        if self.student_layers:
            from rlcore.assets import resolve

            ours = model.config.hidden_size
            theirs = self.config(resolve(self.teacher_path, self.cache_dir, "algorithm.teacher_path")).hidden_size
            projections = torch.nn.ModuleList(torch.nn.Linear(ours, theirs, bias=False) for _ in self.student_layers)
            if ours == theirs:  # the same width: start from the identity
                for p in projections:
                    torch.nn.init.eye_(p.weight)
            model.add_module(self.projection, projections.to(device, getattr(torch, dtype or self.dtype)))
        return model

    def weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state_dict.items() if not k.startswith(self.projection + ".")}

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        if batch.teacher_topk_ids is None or "topk_logprobs" not in wanted:
            return super().forward(model, batch, wanted)
        logprobs, at, rest, hidden = as_forward(model, self._view, batch)
        out = {"logprobs": logprobs, "topk_logprobs": at, "tail_logprob": rest}
        return out if hidden is None else {**out, "hidden": hidden}

    def _view(self, model, batch: RolloutBatch):
        """``response_logprobs_at`` and, with the teacher's states in the batch, the projected hidden states; run as
        the model's forward (``as_forward``), so the projections' sharded weights are gathered too."""
        layers = self.student_layers if batch.teacher_hidden is not None else ()
        logprobs, at, rest, hidden = response_logprobs_at(
            model, batch.prompt_ids, batch.response_ids, batch.teacher_topk_ids,
            temperature=float(batch.teacher_temperature[0]), pad_id=_pad_id(model),
            width=batch.response_mask.shape[1], packing=self.layout, hidden_layers=layers)
        if hidden is not None:
            projections = getattr(model, self.projection)
            hidden = torch.stack([project(hidden[:, :, i]) for i, project in enumerate(projections)], 2)
        return logprobs, at, rest, hidden


class ValueModel(ModelKind):
    """A critic: the causal LM's architecture with a one-output head per token (``values``), the head new.

    The value of response token ``j`` is read where its log-prob is: at the
    position just before it (the state in which it is chosen), as in verl.
    """

    outputs = ("values",)
    auto_class = "AutoModelForTokenClassification"
    num_labels = 1
    with_tokenizer = False

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        return {"values": response_values(model, batch.prompt_ids, batch.response_ids, pad_id=_pad_id(model),
                                          width=batch.response_mask.shape[1], packing=self.layout)}


class RewardModel(ValueModel):
    """A learned reward model: the causal LM's architecture (or a reward model's) with a one-output head per token,
    the head new when built from a causal LM. ``scores`` of response token ``j`` are read at the token itself, once
    it is written (``rlcore.sequences.response_scores``, unlike a critic's values); a step's score is the score of
    its last token (``rlcore.reward_inputs``). Exported with its tokenizer, which the ``orm`` and ``prm`` rewards
    load with it."""

    outputs = ("scores",)
    with_tokenizer = True

    def config(self, path: str):
        # The head's input dropout (0.1 by default) would stay on in the learners' evaluation passes, which run
        # in training mode: the scores are trained and evaluated without it.
        config = super().config(path)
        config.classifier_dropout = 0.0
        return config

    def forward(self, model, batch: RolloutBatch, wanted: tuple[str, ...] = outputs) -> dict[str, torch.Tensor]:
        return {"scores": response_scores(model, batch.prompt_ids, batch.response_ids, pad_id=_pad_id(model),
                                          width=batch.response_mask.shape[1], packing=self.layout)}


def set_threads(requested: int, device: torch.device | str = "cpu", sharers: int = 1) -> int:
    """Give torch ``requested`` intra-op threads; returns the count set.

    ``0`` derives it from the machine and the placement. On CPU: the cores this
    process may run on (its CPU affinity) over ``sharers``, the ranks of its group
    on the same machine, at least 1. Ray sets ``OMP_NUM_THREADS`` to an actor's
    ``num_cpus`` rounded to at least 1, so a role with ``num_cpus=0.25`` would
    otherwise run torch on one thread while the other cores idle. On a GPU the
    work waits on the device, not on CPU threads, and several GPU ranks share a
    node's cores: the count Ray set (the actor's ``num_cpus``) is kept.
    """
    if requested:
        count = requested
    elif torch.device(device).type != "cpu":
        return torch.get_num_threads()
    else:
        count = max(1, len(os.sched_getaffinity(0)) // sharers)
    torch.set_num_threads(count)
    return count


def autocast(device: torch.device | str, mixed_precision: str):
    """``torch.autocast`` to bfloat16 for ``mixed_precision="bf16"``, a no-op for ``"none"``."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def attention_backend(device: torch.device | str) -> str:
    """flash-attn's kernels (``flash_attention_2``) on a CUDA device where the package is installed, else ``sdpa``."""
    if torch.device(device).type == "cuda":
        try:
            import flash_attn  # noqa: F401
            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def as_forward(model: torch.nn.Module, fn, *args, **kwargs):
    """``fn(model, *args, **kwargs)`` as the model's forward: when FSDP2 shards the model (``shard``), its root's
    weights (embeddings, final norm, output head) are gathered around ``fn`` as around ``model.forward``, so ``fn``
    may call submodules such as ``model.base_model`` and read ``lm_head.weight``. A plain call otherwise."""
    run = getattr(model, "run_as_forward", None)
    return run(fn, *args, **kwargs) if run is not None else fn(model, *args, **kwargs)


def shard(model: torch.nn.Module, mp_policy=None, offload_policy=None) -> None:
    """FSDP2 in place: each decoder layer, then the root (embeddings, norm, head); ``as_forward`` then runs functions
    of the model under the root's forward hooks."""
    import types

    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard, register_fsdp_forward_method

    options = {"mp_policy": mp_policy or MixedPrecisionPolicy(), "offload_policy": offload_policy or OffloadPolicy()}
    for layer in getattr(getattr(model, "model", model), "layers", []):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    model.run_as_forward = types.MethodType(lambda self, fn, *args, **kwargs: fn(self, *args, **kwargs), model)
    register_fsdp_forward_method(model, "run_as_forward")


def _pad_id(model) -> int:
    return model.config.pad_token_id or 0


MODELS: Registry[type] = Registry("model kind", {"causal_lm": CausalLM, "causal_lm_untempered": UntemperedCausalLM,
                                                 "causal_lm_kd": DistillLM, "value": ValueModel, "reward": RewardModel})
