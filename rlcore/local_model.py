"""Build a small Qwen2-architecture model and tokenizer locally, with a supervised warm start.

No machine here can reach a model hub, so the project makes its own policy: a
character-level tokenizer built with ``tokenizers``, a Qwen2 config with random
weights, and a few hundred steps of supervised training on the arithmetic task
so that RL starts from a non-trivial accuracy. The result is a normal Hugging
Face folder that transformers and vLLM both load, cached on disk.
"""

from __future__ import annotations

import json
import logging
import random
import string
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rlcore.tasks.arithmetic import ALPHABET, Problem, split_problems

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
# Characters beyond the arithmetic alphabet, so prompts can carry plain-text instructions
# (e.g. L1's "Think for 5 tokens."). Appended after the task's ids, which therefore never move.
TEXT_CHARS = string.ascii_letters + ".,:;!?'\"()<>/"


@dataclass(frozen=True, slots=True)
class LocalModelSpec:
    """What the local model is made of. The cache key is derived from all fields."""

    vocab_size: int = 128
    """Embedding rows; more than the tokenizer needs, so users can add tokens."""
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 256
    warmup_steps: int = 250
    """Supervised steps on the arithmetic task. Few enough that RL has room to improve."""
    warmup_batch_size: int = 64
    warmup_lr: float = 1e-3
    max_operand: int = 30
    """Largest operand of the arithmetic task; must match the data the model is trained on."""
    test_size: int = 200
    """Problems held out of the warm start (the task's test split)."""
    seed: int = 0
    tokenizer_chars: str = TEXT_CHARS
    """Plain-text characters the tokenizer knows besides the task's (part of the cache key)."""

    def cache_key(self) -> str:
        return "tiny-qwen2-arith-" + str(abs(hash(tuple(asdict(self).values()))) % 10**8)


def build_tokenizer():
    """A character-level fast tokenizer: specials, the arithmetic alphabet, then ``TEXT_CHARS``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    task = sorted(set(ALPHABET))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + task + [c for c in TEXT_CHARS if c not in task])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def random_qwen2(spec, vocab_size: int, pad_id: int, eos_id: int, bos_id: int):
    """A ``Qwen2ForCausalLM`` with tied embeddings and random weights seeded with ``spec.seed``; ``spec`` gives the
    shape (``hidden_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``, ``intermediate_size``,
    ``max_position_embeddings``), as ``LocalModelSpec`` and ``rlcore.reasoning_model.ReasoningModelSpec`` do."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def build_random_model(spec: LocalModelSpec, tokenizer):
    return random_qwen2(spec, spec.vocab_size, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.eos_token_id)


def _sft_batch(problems: list[Problem], tokenizer):
    """Prompt+answer+eos sequences, with the loss only on the answer and eos."""
    import torch

    seqs, labels = [], []
    for p in problems:
        prompt = tokenizer.encode(p.prompt)
        answer = tokenizer.encode(p.answer) + [tokenizer.eos_token_id]
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    lab = torch.tensor([l + [-100] * (width - len(l)) for l in labels])
    mask = (lab != -100) | (torch.arange(width) < torch.tensor([len(s) for s in seqs])[:, None])
    return ids, lab, mask.long()


def warm_start(model, tokenizer, spec: LocalModelSpec) -> float:
    """Supervised training on fresh arithmetic problems; returns the last loss."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=spec.warmup_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    model.train()
    # Only train-split problems: the test split stays held out from the warm start too.
    train, _ = split_problems(spec.max_operand, spec.test_size, spec.seed)
    rng = random.Random(spec.seed)
    problems = [rng.choice(train) for _ in range(spec.warmup_steps * spec.warmup_batch_size)]
    loss = torch.tensor(float("nan"))
    for step in range(spec.warmup_steps):
        chunk = problems[step * spec.warmup_batch_size:(step + 1) * spec.warmup_batch_size]
        ids, labels, mask = _sft_batch(chunk, tokenizer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach())


def greedy_accuracy(model, tokenizer, problems: list[Problem], max_new_tokens: int = 6) -> float:
    """Share of problems the model answers exactly with greedy decoding (transformers)."""
    import torch

    correct = 0
    with torch.no_grad():
        for p in problems:
            ids = torch.tensor([tokenizer.encode(p.prompt)])
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            correct += text.strip() == p.answer
    return correct / len(problems)


def make_local_model(out_dir: str | Path, spec: LocalModelSpec = LocalModelSpec(), force: bool = False) -> Path:
    """Build (or reuse) the local model in ``out_dir``; returns the folder.

    The folder is complete only once ``local_model.json`` is written, so an
    interrupted build is redone rather than half-used.
    """
    import torch

    out_dir = Path(out_dir)
    marker = out_dir / "local_model.json"
    if marker.exists() and not force:
        if json.loads(marker.read_text()).get("spec") == asdict(spec):
            return out_dir
    t0 = time.perf_counter()
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    tokenizer = build_tokenizer()
    model = build_random_model(spec, tokenizer)
    loss = warm_start(model, tokenizer, spec) if spec.warmup_steps else float("nan")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {"spec": asdict(spec), "warmup_loss": loss, "build_seconds": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info, indent=2))
    log.info("built local model in %s (%.1fs, warm-up loss %.3f)", out_dir, info["build_seconds"], loss)
    return out_dir
