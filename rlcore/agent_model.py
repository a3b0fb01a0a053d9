"""A small Qwen2-architecture chat model for the tool-use task: BPE tokenizer, tool chat template, random weights.

The "base" model of the agent recipe: it knows nothing, and cold-start SFT on
the multiplication task's tool-use traces (``rlcore.tasks.multiply``) teaches
it to call the ``multiply`` tool before RL. What is built here is only what a
hub model would bring, as ``rlcore.reasoning_model`` builds it:

* a byte-level BPE tokenizer trained with ``tokenizers`` on the task's traces
  rendered with the tools block (the system turn listing ``multiply``'s schema),
  pre-tokenized with Qwen2's regex (so every digit is its own token), with Qwen's
  special tokens ``<|endoftext|>`` (pad), ``<|im_start|>`` and ``<|im_end|>``
  (end of turn, the EOS) and ``rlcore.tools.TOOL_TAGS`` as added, non-special
  tokens (one token each, kept when decoding), as Qwen2.5's tokenizer has them;
* Qwen2.5's tool chat template, ``rlcore.tools.QWEN_TOOL_TEMPLATE``;
* a ``Qwen2ForCausalLM`` with random weights and a ``generation_config.json``
  whose EOS is ``<|im_end|>``.

The folder is cached: ``agent_model.json`` is written last, with the spec, so
an interrupted or outdated build is redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rlcore.reasoning_model import ReasoningModelSpec, build_cached, chat_bpe_tokenizer, is_built
from rlcore.tasks.multiply import TaskSpec, multiply, sft_rows, split_problems
from rlcore.tools import QWEN_TOOL_TEMPLATE, TOOL_TAGS, tool_schema

__all__ = ["AgentModelSpec", "build_tokenizer", "is_built", "make_agent_model", "rendered_tokens", "tokenizer_corpus"]


@dataclass(frozen=True, slots=True)
class AgentModelSpec(ReasoningModelSpec):
    """What the model is made of: the reasoning model's fields, every one part of the cache key.

    The shape is the reasoning model's but without grouped-query attention: four key/value heads for the four
    query heads (about 1.1M parameters). What the task asks of it is copying: the question's factors into the
    call, the tool's answer into the final answer. With ``launch/configs/agent_sft.yaml`` at lr 1e-3 it learns
    both suddenly: held-out greedy accuracy 0.00 at step 450, 0.27 at 500, 0.98 at 550. Measured with a
    transformers copy of that SFT loop, two key/value heads (the reasoning model's) stall at 0.11 to step 800,
    6 layers of them reach 0.06 by step 600 and a width of 192 with 6 heads 0.00; heads of width 16 learnt
    fastest, but vLLM's CPU attention does not support them (32 at least).

    The corpus runs out of pairs to merge at 491 tokens (495 with the tool tags), the tools block learnt word by
    word: a prompt rendered with it is 187 tokens and a whole SFT trace 238 to 240 (``rendered_tokens``), so 512
    positions (the prompt with its tools block, the model's turns and the tool's answers together) leave room for
    several more turns.
    """

    bpe_vocab_size: int = 512
    num_kv_heads: int = 4

    name: ClassVar[str] = "tiny-qwen2-agent"
    marker: ClassVar[str] = "agent_model.json"


def tokenizer_corpus(seed: int = 0, size: int = 300) -> list[str]:
    """Text the BPE merges are learnt from: SFT traces rendered with the tool template and ``multiply``'s schema."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rows = sft_rows(split_problems(TaskSpec(train_size=size, test_size=1, seed=seed))[0])
    texts, _ = render_jinja_template([row["messages"] for row in rows], tools=[tool_schema(multiply)],
                                     chat_template=QWEN_TOOL_TEMPLATE)
    return texts


def build_tokenizer(spec: AgentModelSpec = AgentModelSpec()):
    """The trained byte-level BPE tokenizer with Qwen's specials, the tool tags and the tool chat template, as a
    ``PreTrainedTokenizerFast``."""
    return chat_bpe_tokenizer(tokenizer_corpus(spec.seed), spec.bpe_vocab_size, TOOL_TAGS, QWEN_TOOL_TEMPLATE,
                              spec.max_position_embeddings)


def rendered_tokens(tokenizer, messages: list[dict], generation_prompt: bool = False) -> int:
    """Tokens of ``messages`` rendered with the chat template and ``multiply``'s tools block: what a prompt or a
    trace takes of ``max_position_embeddings``."""
    text = tokenizer.apply_chat_template(messages, tools=[tool_schema(multiply)], tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return len(tokenizer.encode(text, add_special_tokens=False))


def make_agent_model(out_dir: str | Path, spec: AgentModelSpec = AgentModelSpec(), force: bool = False) -> Path:
    """Build (or reuse) the model and tokenizer in ``out_dir``; returns the folder."""
    return build_cached(out_dir, spec, build_tokenizer, force)
