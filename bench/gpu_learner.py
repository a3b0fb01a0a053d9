"""The learner on one GPU (or eight) in minutes: tokens per second, MFU and peak memory, one row per setting.

Runs ``LearnerRank`` under ``torchrun``, with neither Ray nor vLLM (``LearnerRank.from_env``), so a bare GPU machine
can measure the learner before a cluster is set up. It builds its own policies, Qwen2-architecture models with
random weights in the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (their published configs: vocabulary 151,936, tied
embeddings, rope_theta 1e6), and GRPO batches of the shape a reasoning run trains on: prompts of 256 tokens, ``n`` = 8
responses each of uneven length, uniform in 512..2,048 tokens, sampled from the same model with transformers
``generate`` as the rollout would (``--synthetic``: random ids of those lengths, no sampling). Then, per model, one
row each (``SETTINGS``): the reference's forward pass (which fills ``ref_logprobs``); GRPO ``train_step``s packed,
padded, with activation checkpointing, with LoRA r=16 and with the full logits; one reward-model (``orm``) step and
one SFT step. Each row builds a fresh learner, runs one warm-up step (the "first step" whose loss and gradient norm
the table shows; every row starts from the same weights and batch, so packed and padded must agree) and then
``--steps`` timed ones.

Compute is bf16 over float32 master weights (``model.dtype=bfloat16``) on a GPU. On CPU every row is float32: bf16
has no fast path there without AVX512-BF16 (README, "Speed"), and the output says so.

Needs, besides torch, transformers and peft (a bare GPU machine's) and their dependencies, one small pure-Python
wheel (measured: a run with every other installed package made unimportable, ``ray`` and ``vllm`` among them,
``tests/test_gpu_learner.py``)::

    pip install omegaconf        # pure Python; brings antlr4-python3-runtime (PyYAML comes with transformers)

and the repository itself on the path (the script puts its own checkout there; no install needed). A missing
wheel stops the run with one line naming it.

Run, from the repository root::

    torchrun --nproc_per_node 1 bench/gpu_learner.py            # 0.5B and 1.5B, every setting
    torchrun --nproc_per_node 1 bench/gpu_learner.py --quick    # 0.5B only, 2 timed steps a row
    torchrun --nproc_per_node 8 bench/gpu_learner.py            # 8 GPUs of one machine: FSDP, 8x the prompts
    torchrun --nproc_per_node 2 bench/gpu_learner.py --device cpu --model tiny --synthetic   # the CPU smoke run

One machine: every rank reads the model that rank 0 builds in a temporary folder (``TMPDIR``; 3 GB at 1.5B).
By the FLOP estimate beside ``FULL_STEPS`` the whole table takes about 5 minutes on an H100 and ``--quick`` about 2;
no GPU has run it yet (none was lent to the project), so those are estimates, and only the CPU path is tested.

MFU (model FLOPs utilisation, as PaLM defines it: Chowdhery et al. 2022, appendix B). A sequence of P prompt and
R response tokens, L = P + R; N_body the matmul weights of the decoder layers (q, k, v, o, gate, up, down, and
LoRA's A and B), N_head the output head's (hidden x vocab: the learner reads logits only at the R response
positions), d the attention width (heads x head_dim), l the layers. A multiply-add is 2 FLOPs; QK^T and AV cost
2·d each per (query, key) pair of the causal triangle, L(L+1)/2 pairs per layer::

    forward   F = 2·N_body·L + 2·N_head·R + 2·d·l·L·(L+1)
    train step  = 3·F - 2·N_frozen_body·L - 2·N_frozen_head·R

The backward pass costs twice the forward (input gradients and weight gradients, each one forward's matmuls;
attention's backward is two forwards), except that frozen weights (LoRA's base) get no weight gradient. Full
fine-tuning is 3·F: the usual 6·N·tokens plus attention. MFU = the FLOPs of one step's sequences on all ranks /
(seconds per step x ranks x the GPU's dense bf16 peak, ``PEAK_BF16_TFLOPS``). Only the model's FLOPs count: the
recomputation of activation checkpointing, padding, the cross-sequence attention a packed row computes without
flash-attn, and the prompt positions' logits of ``logits_chunk_tokens=0`` are work done but not counted.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # torchrun runs this file by path: the project's packages come from its checkout

REQUIRED_MODULES: dict[str, str] = {
    "torch": "torch", "transformers": "transformers", "peft": "peft", "tokenizers": "tokenizers",
    "safetensors": "safetensors", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime", "yaml": "pyyaml",
}
"""Module -> the wheel that provides it: torch, transformers and peft, and what the learner path needs beyond them and
their dependencies (``tests/test_gpu_learner.py`` runs the script with nothing else importable)."""


# ---- the models --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ModelShape:
    """A Qwen2-architecture shape with tied embeddings."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int = 32768
    rope_theta: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES: dict[str, ModelShape] = {
    # Qwen2.5-0.5B and -1.5B, from their published config.json
    "0.5b": ModelShape(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936),
    "1.5b": ModelShape(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936),
    "tiny": ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512, max_positions=256),
}


@dataclass(frozen=True, slots=True)
class BatchShape:
    """A rank's GRPO batch: ``prompts`` groups of ``n`` samples, ``prompt_tokens`` each, responses uniform in
    [``min_response``, ``max_response``]; learner micro-batches of ``micro_batch`` samples."""

    prompts: int
    n: int
    prompt_tokens: int
    min_response: int
    max_response: int
    micro_batch: int


BATCHES: dict[str, BatchShape] = {
    # 16 samples, about 24.6k tokens per rank; micro-batches of 4 samples (about 6k tokens packed, at most 9.2k
    # positions padded) keep the 1.5B model's bf16 activations without checkpointing at about 20-30 GB, beside its
    # 25 GB of float32 weights, gradients and AdamW state: within an 80 GB GPU
    "0.5b": BatchShape(prompts=2, n=8, prompt_tokens=256, min_response=512, max_response=2048, micro_batch=4),
    "1.5b": BatchShape(prompts=2, n=8, prompt_tokens=256, min_response=512, max_response=2048, micro_batch=4),
    "tiny": BatchShape(prompts=2, n=8, prompt_tokens=16, min_response=8, max_response=32, micro_batch=4),
}

# Time (the whole table within 8 minutes on an H100 or H200). Per rank and step: 16 samples, on average
# 16 x (256 + 1,280) = 24.6k tokens. By train_flops: 1.5B, 9.5 GFLOP per token (7.9 from the layers' 1.31B
# weights, 1.2 from the head at the response positions, 0.4 from attention), 2.3e14 FLOPs per step; 0.5B, 3.0 GFLOP
# per token (2.1 + 0.7 + 0.2), 7.5e13. An H100's dense bf16 peak is 989 TFLOP/s; at 40% MFU that is 396 TFLOP/s and
# a step takes 0.59 s (1.5B) and 0.19 s (0.5B); at a pessimistic 15% (no flash-attn) 1.6 s and 0.5 s. A row is
# 1 warm-up + 3 timed steps, plus loading the model (about 5 s at 1.5B); at 15% MFU, with checkpointing's extra
# third spread as 10% over the rows, the 7 training rows take 7 x (5 + 4 x 1.6 x 1.1) = 84 s at 1.5B and
# 7 x (2 + 4 x 0.5 x 1.1) = 29 s at 0.5B, the reference rows (a third of a step) 10 s. Sampling the batch with
# generate is 2,048 decode steps of 16 rows per model, launch-bound at about 25-35 ms each: 50-70 s per model.
# Model builds and start-up add about 40 s: about 5 minutes in all, under 8 with room for a slower start or MFU.
# --quick (0.5B only, 2 timed steps): 7 x (2 + 3 x 0.5 x 1.1) + 3 + 60 + 30 = about 2 minutes.
FULL_STEPS, QUICK_STEPS = 3, 2


# ---- FLOPs and MFU (pure) ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FlopModel:
    """The matmul weights a pass multiplies by, for ``forward_flops`` and ``train_flops``."""

    body: int
    """Weights applied at every position (the decoder layers' projections, LoRA's A and B, a reward head)."""
    head: int
    """Weights applied at the response positions only (a causal LM's output head)."""
    width: int
    """Attention width: heads x head_dim."""
    layers: int
    frozen_body: int = 0
    """Of ``body``, the weights that get no gradient (LoRA's base weights)."""
    frozen_head: int = 0


def layer_matmul_params(s: ModelShape) -> int:
    """Matmul weights of one decoder layer: q and o (hidden x hidden), k and v (hidden x kv width), gate, up, down."""
    kv = s.kv_heads * s.head_dim
    return 2 * s.hidden * s.hidden + 2 * s.hidden * kv + 3 * s.hidden * s.intermediate


def lora_matmul_params(s: ModelShape, rank: int) -> int:
    """LoRA's A and B of every projection (peft's default targets here): rank x (in + out) each, all layers."""
    kv = s.kv_heads * s.head_dim
    per_layer = 2 * (s.hidden + s.hidden) + 2 * (s.hidden + kv) + 3 * (s.hidden + s.intermediate)
    return s.layers * rank * per_layer


def flop_model(s: ModelShape, head: str = "lm", lora_rank: int = 0) -> FlopModel:
    """``s`` as a ``FlopModel``: ``head`` ``lm`` (hidden x vocab at the response positions) or ``score`` (a reward
    model's one-output head at every position); with ``lora_rank``, the adapter trains and the rest is frozen."""
    layers = s.layers * layer_matmul_params(s)
    head_params = s.hidden * s.vocab if head == "lm" else 0
    body = layers + (s.hidden if head == "score" else 0)
    if not lora_rank:
        return FlopModel(body=body, head=head_params, width=s.heads * s.head_dim, layers=s.layers)
    return FlopModel(body=body + lora_matmul_params(s, lora_rank), head=head_params, width=s.heads * s.head_dim,
                     layers=s.layers, frozen_body=body, frozen_head=head_params)


def forward_flops(m: FlopModel, prompt: int, response: int) -> int:
    """FLOPs of one forward pass over a ``prompt + response`` sequence (the module docstring's F)."""
    length = prompt + response
    return 2 * m.body * length + 2 * m.head * response + 2 * m.width * m.layers * length * (length + 1)


def train_flops(m: FlopModel, prompt: int, response: int) -> int:
    """FLOPs of its forward and backward pass: 3·F, less the weight gradients frozen weights skip."""
    length = prompt + response
    return 3 * forward_flops(m, prompt, response) - 2 * m.frozen_body * length - 2 * m.frozen_head * response


def mfu(flops_per_step: float, seconds_per_step: float, devices: int, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over ``devices`` x the peak; None without a known peak."""
    if peak_tflops is None or seconds_per_step <= 0:
        return None
    return flops_per_step / (seconds_per_step * devices * peak_tflops * 1e12)


PEAK_BF16_TFLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], float], ...] = (
    # (words the device name contains, words it must not contain, dense bf16 TFLOP/s without sparsity)
    (("H100", "PCIE"), (), 756.0),
    (("H100", "HBM3"), (), 989.0),  # the SXM part reports itself as "NVIDIA H100 80GB HBM3"
    (("H100", "SXM"), (), 989.0),
    (("H200",), ("NVL",), 989.0),
    (("A100",), (), 312.0),
    (("L40S",), (), 362.0),
    (("A10G",), (), 125.0),
    (("RTX 4090",), ("4090 D",), 165.0),
)
"""The GPUs whose peak the script knows; any other (an H100 NVL, an H200 NVL, a V100...) gets MFU "n/a"."""


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of the GPU named ``device_name`` (``torch.cuda.get_device_name``); None when unknown."""
    name = device_name.upper()
    for words, excluded, tflops in PEAK_BF16_TFLOPS:
        if all(w in name for w in words) and not any(w in name for w in excluded):
            return tflops
    return None


# ---- the settings ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Setting:
    """One table row: an algorithm's step (or the reference's forward pass) under config overrides."""

    key: str
    label: str
    algorithm: str
    """grpo, orm or sft: which batch and loss."""
    overrides: tuple[str, ...] = ()
    forward_only: bool = False
    lora_rank: int = 0


SETTINGS: tuple[Setting, ...] = (
    Setting("reference", "reference forward, packed", "grpo", ("reference.packing=packed",), forward_only=True),
    Setting("packed", "GRPO step, packed", "grpo", ("learner.packing=packed",)),
    Setting("padded", "GRPO step, padded", "grpo", ("learner.packing=padded",)),
    Setting("checkpointing", "GRPO step, packed, activation checkpointing", "grpo",
            ("learner.packing=packed", "learner.activation_checkpointing=true")),
    Setting("lora16", "GRPO step, packed, LoRA r=16", "grpo",
            ("learner.packing=packed", "learner.lora_rank=16", "learner.lora_alpha=32"), lora_rank=16),
    Setting("orm", "reward-model (orm) step, packed", "orm", ("learner.packing=packed",)),
    Setting("sft", "SFT step, packed", "sft", ("learner.packing=packed",)),
    # last: the full [tokens x 151,936] fp32 logits are the row most likely to run out of memory
    Setting("unchunked", "GRPO step, packed, full logits (logits_chunk_tokens=0)", "grpo",
            ("learner.packing=packed", "learner.logits_chunk_tokens=0")),
)
"""Every row, in order; chunked logits (``logits_chunk_tokens=1024``) are the default of all but the last."""

LOSS_KEYS = {"grpo": "pg_loss", "orm": "orm_loss", "sft": "sft_loss"}
"""The metric shown as a row's first-step loss."""


def run_overrides(setting: Setting, model_dir: str, dtype: str, b: BatchShape, world: int, seed: int,
                  reference_threads: int = 0) -> list[str]:
    """The config of ``setting``'s row: one mini-batch of every rank's samples per step (one optimizer step),
    micro-batches of ``b.micro_batch`` samples (the same in every row, so packed and padded compute the same).
    ``reference_threads``: every rank runs a reference here, where a run has one; on CPU they split the cores as
    the learner ranks do (0, the reference's default, would give each rank all of them: 2 ranks on 2 cores took
    0.9 s for a pass that takes 0.1 s)."""
    samples = b.prompts * b.n * world
    common = [f"model.path={model_dir}", f"model.dtype={dtype}", f"trainer.seed={seed}",
              f"learner.world_size={world}", f"learner.mini_batch_size={samples}",
              f"learner.micro_batch_size={b.micro_batch}", f"reference.micro_batch_size={b.micro_batch}",
              f"reference.num_threads={reference_threads}"]
    if setting.algorithm == "grpo":
        algorithm = [f"data.prompts_per_step={b.prompts * world}", f"rollout.n={b.n}",
                     f"rollout.max_new_tokens={b.max_response}"]
    elif setting.algorithm == "orm":  # a chosen/rejected pair is a group of two
        algorithm = ["algorithm.name=orm", "reference.enabled=false", f"data.prompts_per_step={samples // 2}"]
    else:
        algorithm = ["algorithm.name=sft", "reference.enabled=false", f"data.prompts_per_step={samples}"]
    return common + algorithm + list(setting.overrides)


# ---- the batches -------------------------------------------------------------------------------------------------
def group_generator(seed: int, group: int):
    """A generator for group ``group`` alone: the batch is the same whatever the world size."""
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + group)


def draw_group(seed: int, group: int, b: BatchShape, vocab: int) -> tuple[list[int], list[int], list[list[int]],
                                                                         list[float]]:
    """Group ``group``'s prompt (random ids past the special tokens), its ``n`` response lengths, random responses of
    those lengths (``--synthetic``) and scores in [0, 1] (a reward's)."""
    import torch

    gen = group_generator(seed, group)
    prompt = torch.randint(3, vocab, (b.prompt_tokens,), generator=gen).tolist()
    lengths = torch.randint(b.min_response, b.max_response + 1, (b.n,), generator=gen).tolist()
    responses = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]
    return prompt, lengths, responses, torch.rand(b.n, generator=gen).tolist()


def sample_responses(model_dir: str, prompts: list[list[int]], lengths: list[int], device, dtype: str,
                     seed: int) -> list[list[int]]:
    """The rollout's stand-in: ``generate`` samples at temperature 1 over the whole vocabulary (top-k off), as many
    new tokens as the longest length for every row (the stop token suppressed), each row then cut to its length."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    longest = max(lengths)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(torch.tensor(prompts, device=device), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=longest, min_new_tokens=longest, pad_token_id=model.config.pad_token_id,
                             eos_token_id=model.config.eos_token_id)
    width = len(prompts[0])
    responses = [row[width:width + n].tolist() for row, n in zip(out.cpu(), lengths)]
    del model, out
    return responses


def rank_batch(rank: int, b: BatchShape, vocab: int, seed: int, synthetic: bool, model_dir: str, device,
               dtype: str):
    """This rank's GRPO batch: groups ``rank·prompts .. (rank+1)·prompts - 1`` (``draw_group``), the responses
    sampled with ``generate`` unless ``synthetic``."""
    prompts, lengths, responses, scores = [], [], [], []
    for g in range(rank * b.prompts, (rank + 1) * b.prompts):
        prompt, group_lengths, group_responses, group_scores = draw_group(seed, g, b, vocab)
        prompts += [prompt] * b.n
        lengths += group_lengths
        responses += group_responses
        scores += group_scores
    if not synthetic:
        responses = sample_responses(model_dir, prompts, lengths, device, dtype, seed + rank)
    return grpo_batch(prompts, responses, scores, b.n)


def grpo_batch(prompts: list[list[int]], responses: list[list[int]], scores: list[float], n: int):
    """A GRPO ``RolloutBatch``: groups of ``n`` consecutive samples with their rewards' ``scores``."""
    import torch

    from rlcore.batch import RolloutBatch, pad_2d

    size = len(responses)
    return RolloutBatch(
        prompt_ids=prompts, response_ids=responses, response_mask=pad_2d([[1.0] * len(r) for r in responses]),
        group_ids=torch.arange(size // n).repeat_interleave(n), policy_version=torch.zeros(size, dtype=torch.long),
        truncated=torch.zeros(size, dtype=torch.bool), scores=torch.tensor(scores))


def orm_batch(prompts: list[list[int]], responses: list[list[int]]):
    """Reward-model pairs as ``launch.rm_sources.reward_batch`` makes them: samples 2k (chosen) and 2k + 1
    (rejected) share a prompt; the response is one step, scored at its last token (``step_mask``)."""
    import torch

    from rlcore.batch import RolloutBatch, pad_2d

    return RolloutBatch(
        prompt_ids=prompts, response_ids=responses, response_mask=pad_2d([[1.0] * len(r) for r in responses]),
        step_mask=pad_2d([[0.0] * (len(r) - 1) + [1.0] for r in responses]),
        group_ids=torch.arange(len(responses) // 2).repeat_interleave(2))


def sft_batch(prompts: list[list[int]], responses: list[list[int]]):
    """SFT examples: every response token trained, each example its own group."""
    import torch

    from rlcore.batch import RolloutBatch, pad_2d

    return RolloutBatch(prompt_ids=prompts, response_ids=responses, group_ids=torch.arange(len(responses)),
                        response_mask=pad_2d([[1.0] * len(r) for r in responses]))


# ---- one row -----------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What every row of one model shares."""

    rank: int
    world: int
    device: Any
    reference_threads: int
    dtype: str
    steps: int
    seed: int
    model_dir: str
    shape: ModelShape
    batch_shape: BatchShape
    batches: dict[str, Any] = field(default_factory=dict)
    lengths: list[tuple[int, int]] = field(default_factory=list)
    """This rank's (prompt, response) lengths, for the FLOPs."""


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device) -> int:
    """GPU: the most the caching allocator held in tensors since this row began. CPU: the process's resident
    peak since it started (``getrusage``: it cannot be reset, so a row shows the largest of it and every row before)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reduced(values: list[float], op: str) -> list[float]:
    """``values`` reduced elementwise over the ranks (``sum`` or ``max``)."""
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def timed(step, count: int, device) -> list[float]:
    """Seconds of each of ``count`` calls ``step(i)``, i = 1..count, the device synchronised around each."""
    import torch.distributed as dist

    dist.barrier()
    times = []
    for i in range(1, count + 1):
        sync(device)
        start = time.perf_counter()
        step(i)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def run_reference(setting: Setting, ctx: Context, cfg) -> tuple[list[float], dict[str, float]]:
    """The reference's forward passes over this rank's samples; fills the GRPO batch's ``ref_logprobs`` and
    ``rollout_logprobs`` (the initial weights are the sampler's)."""
    from actors.reference import ReferenceWorker

    reference = ReferenceWorker(cfg, ctx.model_dir)
    batch = ctx.batches["grpo"]
    logprobs = reference.logprobs(batch)  # the warm-up pass
    batch.ref_logprobs, batch.rollout_logprobs = logprobs, logprobs.clone()
    return timed(lambda i: reference.logprobs(batch), ctx.steps, ctx.device), {}


def run_learner(setting: Setting, ctx: Context, plan) -> tuple[list[float], dict[str, float]]:
    """A fresh learner group (the ranks of this torchrun): one warm-up ``train_step``, whose metrics are returned,
    then ``ctx.steps`` timed ones."""
    from actors.learner import LearnerRank

    group = plan.learners["actor"]
    learner = LearnerRank.from_env(plan.cfg, plan.algorithm, "actor", group.spec, group.model)
    batch = ctx.batches[setting.algorithm]
    if setting.algorithm == "grpo":
        plan.algorithm.compute_advantages(batch)
    state = plan.algorithm.state_dict()
    try:
        first = learner.train_step(batch, 0, state)
        times = timed(lambda i: learner.train_step(batch, i, state), ctx.steps, ctx.device)
    finally:  # the weights go with this frame; the process group stays for the next row
        learner.model = learner.optimizer = learner.scheduler = None
    return times, first


def run_row(setting: Setting, ctx: Context) -> dict[str, Any]:
    """One row: ``setting`` timed on every rank, reduced over them (FLOPs and tokens summed, each step's seconds
    and the peak memory the largest rank's)."""
    import torch

    from launch.build import configure

    plan = configure(None, run_overrides(setting, ctx.model_dir, ctx.dtype, ctx.batch_shape, ctx.world, ctx.seed,
                                         ctx.reference_threads))
    reset_memory(ctx.device)
    error = None
    try:
        if setting.forward_only:
            times, first = run_reference(setting, ctx, plan.cfg)
        else:
            times, first = run_learner(setting, ctx, plan)
    except torch.OutOfMemoryError:
        times, first, error = [float("nan")] * ctx.steps, {}, "out of memory"
    memory = peak_memory_bytes(ctx.device)
    reset_memory(ctx.device)
    m = flop_model(ctx.shape, head="score" if setting.algorithm == "orm" else "lm", lora_rank=setting.lora_rank)
    count = forward_flops if setting.forward_only else train_flops
    local_flops = float(sum(count(m, p, r) for p, r in ctx.lengths))
    local_tokens = float(sum(p + r for p, r in ctx.lengths))
    flops, tokens = reduced([local_flops, local_tokens], "sum")
    times = reduced(times, "max")
    memory = reduced([float(memory)], "max")[0]
    seconds = statistics.median(times)
    loss_key = LOSS_KEYS[setting.algorithm]
    return {
        "setting": setting.key, "label": setting.label, "algorithm": setting.algorithm,
        "overrides": list(setting.overrides), "forward_only": setting.forward_only, "error": error,
        "tokens_per_step": int(tokens), "flops_per_step": flops, "step_seconds": times,
        "tokens_per_second": tokens / seconds if error is None else None,
        "tokens_per_second_per_device": tokens / seconds / ctx.world if error is None else None,
        "peak_memory_bytes": int(memory),
        "first_loss_key": None if setting.forward_only else loss_key,
        "first_loss": first.get(loss_key), "first_grad_norm": first.get("grad_norm"),
        "first_metrics": first,
    }


# ---- a model's rows ----------------------------------------------------------------------------------------------
def build_model(shape: ModelShape, out_dir: str, device, seed: int) -> int:
    """A random-weight Qwen2 model with tied embeddings and the project's local tokenizer
    (``rlcore.local_model.build_tokenizer``), saved in bf16 as a released checkpoint is; returns its parameters.
    Built on ``device``: initialising 1.5B weights there takes a second, on a CPU tens of seconds."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlcore.local_model import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions, rope_theta=shape.rope_theta, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.to("cpu", torch.bfloat16 if device.type == "cuda" else torch.float32).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    return params


def run_model(name: str, settings: list[Setting], args, rank: int, world: int, device, dtype: str,
              say) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build model ``name`` (rank 0, in a temporary folder every rank reads), sample the batch, run the rows."""
    import torch.distributed as dist

    shape = SHAPES[name]
    b = batch_shape(name, args)
    holder = [tempfile.mkdtemp(prefix=f"gpu-learner-{name}-") if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)  # one machine: every rank reads rank 0's folder
    model_dir = holder[0]
    try:
        start = time.perf_counter()
        params = [build_model(shape, model_dir, device, args.seed) if rank == 0 else 0]
        dist.broadcast_object_list(params, src=0)
        say(f"{name}: {params[0] / 1e6:,.1f}M parameters, built in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        grpo = rank_batch(rank, b, shape.vocab, args.seed, args.synthetic, model_dir, device, dtype)
        prompts, responses = grpo.prompt_ids, grpo.response_ids
        dist.barrier()
        say(f"{name}: {'drew' if args.synthetic else 'sampled'} {len(responses) * world} responses in "
            f"{time.perf_counter() - start:.0f} s")
        threads = 0 if device.type == "cuda" else cpu_threads()
        ctx = Context(rank=rank, world=world, device=device, reference_threads=threads, dtype=dtype,
                      steps=args.steps, seed=args.seed, model_dir=model_dir, shape=shape, batch_shape=b,
                      lengths=[(len(p), len(r)) for p, r in zip(prompts, responses)])
        ctx.batches = {"grpo": grpo, "orm": orm_batch(prompts, responses), "sft": sft_batch(prompts, responses)}
        rows = []
        for setting in settings:
            start = time.perf_counter()
            row = {"model": name, "dtype": dtype, **run_row(setting, ctx)}
            rows.append(row)
            say(f"{name}: {setting.label}: {row['error'] or format_rate(row['tokens_per_second'])} tokens/s "
                f"({time.perf_counter() - start:.0f} s)")
        dist.barrier()  # every rank is done with the folder
    finally:
        if rank == 0:
            import shutil

            shutil.rmtree(model_dir, ignore_errors=True)
    info = {"shape": asdict(shape), "batch": asdict(b), "parameters": params[0],
            "responses": "synthetic" if args.synthetic else "sampled with generate"}
    return info, rows


def batch_shape(name: str, args) -> BatchShape:
    """The model's batch shape with the flags that override it."""
    b = BATCHES[name]
    flags = {"prompts": args.prompts_per_rank, "n": args.samples_per_prompt, "prompt_tokens": args.prompt_tokens,
             "min_response": args.min_response, "max_response": args.max_response, "micro_batch": args.micro_batch}
    return replace(b, **{k: v for k, v in flags.items() if v is not None})


# ---- output ------------------------------------------------------------------------------------------------------
def format_rate(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def format_number(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def table(rows: list[dict[str, Any]], peak: float | None, world: int, device_type: str) -> str:
    """The rows as a markdown table."""
    memory = "peak GPU memory (GiB, largest rank)" if device_type == "cuda" else \
        "peak RSS of the process since start (GiB, largest rank)"
    lines = [f"| model | setting | dtype | tokens/s | tokens/s per device | MFU | {memory} | first loss | "
             f"first grad-norm | s/step (median, min-max) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        times = r["step_seconds"]
        seconds = statistics.median(times)
        u = None if r["error"] else mfu(r["flops_per_step"], seconds, world, peak)
        loss = "" if r["first_loss"] is None else f"{r['first_loss_key']} {r['first_loss']:.6g}"
        spread = r["error"] or f"{seconds:.3f} ({min(times):.3f}-{max(times):.3f})"
        lines.append(f"| {r['model']} | {r['label']} | {r['dtype']} | {format_rate(r['tokens_per_second'])} | "
                     f"{format_rate(r['tokens_per_second_per_device'])} | "
                     f"{'n/a' if u is None else f'{100 * u:.1f}%'} | {r['peak_memory_bytes'] / 2**30:.2f} | {loss} | "
                     f"{format_number(r['first_grad_norm'])} | {spread} |")
    return "\n".join(lines)


def imported_distributions() -> list[str]:
    """The installed distributions whose top-level modules this process imported (the third-party footprint)."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    tops = {name.split(".")[0] for name in list(sys.modules)}
    return sorted({d for top in tops for d in owners.get(top, [])})


def cpu_threads() -> int:
    """torch threads per rank on CPU: the cores this process may use over the ranks on this machine, as the
    learner's ``set_threads`` gives them."""
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def device_description(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {cpu_threads()} torch threads per rank)"


# ---- main --------------------------------------------------------------------------------------------------------
def missing_wheels() -> list[str]:
    """The wheels of ``REQUIRED_MODULES`` whose module cannot be found."""
    return sorted({wheel for module, wheel in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="cuda when a GPU is visible (auto); cpu runs float32 with gloo")
    parser.add_argument("--model", default=None,
                        help=f"comma-separated, of {', '.join(SHAPES)} (default: 0.5b,1.5b on a GPU, 0.5b with "
                             "--quick; tiny on CPU)")
    parser.add_argument("--settings", default=",".join(s.key for s in SETTINGS),
                        help="comma-separated rows (the reference always runs first: it fills ref_logprobs)")
    parser.add_argument("--quick", action="store_true", help=f"0.5B only and {QUICK_STEPS} timed steps per row")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per row after one warm-up (default {FULL_STEPS}, {QUICK_STEPS} quick)")
    parser.add_argument("--synthetic", action="store_true", help="random response ids instead of generate's samples")
    parser.add_argument("--prompts-per-rank", type=int, default=None, help="GRPO groups per rank (default 2)")
    parser.add_argument("--samples-per-prompt", type=int, default=None, help="n, samples per prompt (default 8)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="default 256 (tiny: 16)")
    parser.add_argument("--min-response", type=int, default=None, help="default 512 (tiny: 8)")
    parser.add_argument("--max-response", type=int, default=None, help="default 2048 (tiny: 32)")
    parser.add_argument("--micro-batch", type=int, default=None, help="samples per micro-batch (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="the JSON file (default outputs/gpu_learner/<time>.json)")
    args = parser.parse_args(argv)
    keys = [s.key for s in SETTINGS]
    wanted = [k for k in args.settings.split(",") if k]
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        parser.error(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(keys)}")
    args.settings = [s for s in SETTINGS if s.key == "reference" or s.key in wanted]
    if args.model is not None:
        args.models = [m for m in args.model.split(",") if m]
        bad = [m for m in args.models if m not in SHAPES]
        if bad or not args.models:
            parser.error(f"--model: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(SHAPES)}")
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else FULL_STEPS
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "RANK" not in os.environ:
        print("gpu_learner.py: run it under torchrun, e.g. torchrun --nproc_per_node 1 bench/gpu_learner.py",
              file=sys.stderr)
        return 2
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: the learner takes a GPU when it sees one
    missing = missing_wheels()
    if missing:
        print(f"gpu_learner.py: missing {', '.join(missing)}: pip install {' '.join(missing)}", file=sys.stderr)
        return 2

    import torch
    import torch.distributed as dist
    import transformers

    transformers.logging.set_verbosity_error()  # the reward model's new head and generate's defaults, once per row
    transformers.logging.disable_progress_bar()  # a bar per load and save, per rank
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("gpu_learner.py: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")  # the learners find it initialised and join it
    models = getattr(args, "models", None) or (["tiny"] if not cuda else ["0.5b"] if args.quick else ["0.5b", "1.5b"])
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = "bfloat16" if bf16 else "float32"
    name = device_description(device)
    peak = peak_tflops(name) if cuda else None

    def say(line: str) -> None:
        if rank == 0:
            print(line, file=sys.stderr, flush=True)

    from actors.models import attention_backend

    notes = [f"device: {name} x {world}; torch {torch.__version__}, transformers {transformers.__version__}; "
             f"attention {attention_backend(device)}"]
    if not cuda:
        notes.append("CPU: every row float32 (bf16 has no fast path on CPUs without AVX512-BF16); MFU n/a; memory is "
                     "the process's peak RSS since it started (getrusage), which no row can reset")
    elif not bf16:
        notes.append(f"'{name}' has no bf16: every row float32")
    if cuda and peak is None:
        notes.append(f"MFU n/a: the dense bf16 peak of '{name}' is not in PEAK_BF16_TFLOPS")
    elif cuda:
        notes.append(f"MFU against {peak:g} TFLOP/s per GPU (dense bf16, no sparsity)")
    if cuda and attention_backend(device) == "sdpa":
        notes.append("no flash-attn: packed rows attend through SDPA with a block-diagonal mask over the whole "
                     "packed micro-batch (work MFU does not count)")
    for line in notes:
        say(line)

    start = time.perf_counter()
    infos, rows = {}, []
    try:
        for model in models:
            infos[model], model_rows = run_model(model, args.settings, args, rank, world, device, dtype, say)
            rows += model_rows
        dist.barrier()
    finally:  # after a failure, no barrier: the other ranks may be inside a collective that will never complete
        dist.destroy_process_group()
    if rank != 0:
        return 0
    text = table(rows, peak, world, device.type)
    print("\n".join(notes) + "\n\n" + text)
    out = Path(args.out) if args.out else REPO / "outputs" / "gpu_learner" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in rows:
        seconds = statistics.median(r["step_seconds"])
        r["mfu"] = None if r["error"] else mfu(r["flops_per_step"], seconds, world, peak)
    report = {"device": device.type, "device_name": name, "world_size": world, "peak_bf16_tflops": peak,
              "dtype": dtype, "attention": attention_backend(device), "steps": args.steps, "quick": args.quick,
              "torch": torch.__version__, "transformers": transformers.__version__, "notes": notes, "models": infos,
              "rows": rows, "seconds": time.perf_counter() - start, "imported_distributions": imported_distributions()}
    out.write_text(json.dumps(report, indent=2, allow_nan=True))
    out.with_suffix(".md").write_text("\n".join(notes) + "\n\n" + text + "\n")
    print(f"\nwhole run {report['seconds']:.0f} s; written {out} (and {out.with_suffix('.md').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
