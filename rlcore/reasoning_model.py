"""A small Qwen2-architecture chat model for the reasoning task: BPE tokenizer, chat template, random weights.

This is the "base" model of the R1 recipe: it knows nothing, and the
framework's cold-start SFT stage teaches it the reasoning task
(``rlcore.tasks.reasoning``) before RL. What is built here is only what a hub
model would bring:

* a byte-level BPE tokenizer trained with ``tokenizers`` on the task's text,
  pre-tokenized with Qwen2's regex (so every digit is its own token), with
  Qwen's special tokens ``<|endoftext|>`` (pad), ``<|im_start|>`` and
  ``<|im_end|>`` (end of turn, the EOS) and the R1 tags as added tokens;
* Qwen's ChatML chat template, without Qwen's default system message;
* a ``Qwen2ForCausalLM`` with random weights and a ``generation_config.json``
  whose EOS is ``<|im_end|>``, so transformers and vLLM stop at the end of the turn.

The folder is cached: ``reasoning_model.json`` is written last, with the spec,
so an interrupted or outdated build is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar
from pathlib import Path

from rlcore.local_model import random_qwen2
from rlcore.tasks.reasoning import (
    LENGTH_SUFFIX,
    LEVELS,
    TaskSpec,
    solution,
    split_problems,
)

log = logging.getLogger(__name__)

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
R1_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
# Qwen2's pre-tokenizer regex (tokenizer.json of the Qwen2 models): single digits, words with one leading
# non-letter, punctuation runs with one leading space, newlines and other whitespace.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# ChatML as in Qwen2's tokenizer_config.json, minus its default system message.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True, slots=True)
class ReasoningModelSpec:
    """What the model is made of. Every field is part of the cache key.

    The defaults (about 1.0M parameters) are sized so that cold-start SFT on
    ``reasoning-sft-train.jsonl`` reaches a middling held-out greedy accuracy in
    a minute or two on two CPU cores, leaving RL room to improve: measured with
    AdamW (lr 3e-3, betas 0.9/0.95, 20 warm-up steps, clip 1.0) and 16
    conversations a step, 600 steps give 0.16-0.44 and 700 steps 0.26-0.53
    over three data orders, about 6 steps/s on one core.
    """

    bpe_vocab_size: int = 400
    """Target vocabulary of the BPE trainer (256 bytes, specials, merges); it stops earlier when the corpus
    has no more pairs to merge."""
    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as Qwen2)."""
    intermediate_size: int = 512
    """Width of the MLP."""
    max_position_embeddings: int = 512
    """Longest sequence, prompt and response together."""
    seed: int = 0
    """Seed of the tokenizer corpus and of the random weights."""

    name: ClassVar[str] = "tiny-qwen2-reason"
    marker: ClassVar[str] = "reasoning_model.json"
    """Written last into a finished build, with the spec: an interrupted or outdated build is redone."""

    def cache_key(self) -> str:
        """A short, stable name for this spec (the same in every process)."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"


def tokenizer_corpus(seed: int = 0, size: int = 300) -> list[str]:
    """Text the BPE merges are learnt from: chat-rendered questions and solutions of every level and length."""
    problems = split_problems(TaskSpec(min_digits=1, max_digits=4, train_size=size, test_size=1, seed=seed))[0]
    texts = []
    for i, p in enumerate(problems):
        level = LEVELS[i % len(LEVELS)]
        user = p.question(length_target=10 + i % 90 if i % 2 else None)
        texts.append(f"{IM_START}system\n{LENGTH_SUFFIX}{IM_END}\n{IM_START}user\n{user}{IM_END}\n"
                     f"{IM_START}assistant\n{solution(p, level)}{IM_END}\n")
    return texts


def build_tokenizer(spec: ReasoningModelSpec = ReasoningModelSpec()):
    """The trained byte-level BPE tokenizer with Qwen's specials and chat template, as a ``PreTrainedTokenizerFast``."""
    return chat_bpe_tokenizer(tokenizer_corpus(spec.seed), spec.bpe_vocab_size, R1_TAGS, CHAT_TEMPLATE,
                              spec.max_position_embeddings)


def chat_bpe_tokenizer(corpus: list[str], vocab_size: int, tags: list[str], chat_template: str, max_length: int):
    """A byte-level BPE tokenizer trained on ``corpus`` with Qwen2's pre-tokenizer (every digit its own token),
    Qwen's specials (``<|im_end|>`` the EOS), ``tags`` as added non-special tokens and ``chat_template``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer)
    # Added after training: added before it, they did not survive as whole tokens.
    core.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tags])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=IM_END,
                                        additional_special_tokens=[IM_START], clean_up_tokenization_spaces=False,
                                        model_max_length=max_length)
    tokenizer.chat_template = chat_template
    return tokenizer


def model_vocab_size(tokenizer) -> int:
    """Embedding rows: the tokenizer's length rounded up to a multiple of 64, as hub models pad theirs."""
    return -(-len(tokenizer) // 64) * 64


def build_random_model(spec: ReasoningModelSpec, tokenizer):
    """A ``Qwen2ForCausalLM`` with random weights (seeded), its generation config stopping at ``<|im_end|>``."""
    from transformers import GenerationConfig

    model = random_qwen2(spec, model_vocab_size(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id,
                         tokenizer.pad_token_id)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.pad_token_id)
    return model


def is_built(out_dir: str | Path, spec: ReasoningModelSpec) -> bool:
    """Whether ``out_dir`` holds a finished build of ``spec``."""
    marker = Path(out_dir) / spec.marker
    return marker.exists() and json.loads(marker.read_text()).get("spec") == asdict(spec)


def make_reasoning_model(out_dir: str | Path, spec: ReasoningModelSpec = ReasoningModelSpec(),
                         force: bool = False) -> Path:
    """Build (or reuse) the model and tokenizer in ``out_dir``; returns the folder."""
    return build_cached(out_dir, spec, build_tokenizer, force)


def build_cached(out_dir: str | Path, spec: ReasoningModelSpec, build_tokenizer: Callable, force: bool = False) -> Path:
    """Build (or reuse) a model of ``spec`` (or of a spec derived from it) with ``build_tokenizer(spec)``'s tokenizer
    in ``out_dir``; ``spec.marker`` is written last. Returns the folder."""
    out_dir = Path(out_dir)
    if is_built(out_dir, spec) and not force:
        return out_dir
    t0 = time.perf_counter()
    (out_dir / spec.marker).unlink(missing_ok=True)
    tokenizer = build_tokenizer(spec)
    model = build_random_model(spec, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)  # the template in tokenizer_config.json, for vLLM
    info = {"spec": asdict(spec), "cache_key": spec.cache_key(), "vocab": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()),
            "build_seconds": round(time.perf_counter() - t0, 1)}
    (out_dir / spec.marker).write_text(json.dumps(info, indent=2))
    log.info("built %s in %s (%.1fs)", spec.name, out_dir, info["build_seconds"])
    return out_dir


def thinking_tokens(tokenizer, thinking: str) -> int:
    """Tokens of a ``<think>`` block's content: what the model writes between the two tags.

    The tags are added tokens, so the content is tokenized on its own within a
    whole response too and this count is the same as the rollout's.
    """
    return len(tokenizer.encode(thinking, add_special_tokens=False))


def load_thinking_counter(model_dir: str | Path) -> Callable[[str], int]:
    """``thinking_tokens`` with the tokenizer saved in ``model_dir``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return lambda thinking: thinking_tokens(tokenizer, thinking)
