"""The one input encoding of a learned reward model, shared by its training (``launch.rm_sources``) and its
serving as a reward term (``rewards.reward_model``).

A reward model reads the rendered prompt (a chat-templated string, or a plain
string used as it is) followed by the response, and scores *steps*: an outcome
reward model (ORM) has one step, the whole response; a process reward model
(PRM) one per piece of ``rlcore.test_time.split_steps``. Every step is encoded
on its own (``rlcore.test_time.encode_steps``), so each step ends on a token
boundary, and the score of a step is the model's output at that step's last
token: the state once the step is written (``rlcore.sequences.response_scores``),
not the position before it that a critic's value is read at.

Training rows and served samples both pass through ``encode_reward_input``, so
a reward model never sees at serving time an encoding it was not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlcore.test_time import encode_steps


@dataclass(frozen=True, slots=True)
class RewardInput:
    """One prompt and its response, tokenized for a reward model."""

    prompt_ids: list[int]
    """The rendered prompt's token ids, no special tokens added (a templated prompt already holds its own)."""
    response_ids: list[int]
    """The steps' token ids, each step encoded on its own, concatenated."""
    step_ends: list[int]
    """Index in ``response_ids`` of each step's last token: where the step's score is read."""


def encode_reward_input(prompt: str, steps: Sequence[str], tokenizer) -> RewardInput:
    """``prompt`` (already rendered) and the response cut into ``steps`` (an ORM: ``[response]``), tokenized.

    Raises ``ValueError`` when there is no step or a step encodes to no tokens.
    """
    if not steps:
        raise ValueError("a reward model input needs at least one step")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    response_ids, step_ends = encode_steps(steps, encode)
    return RewardInput(encode(prompt), response_ids, step_ends)


def step_row(length: int, ends: Sequence[int], values: Sequence[float] | None = None) -> list[float]:
    """A response-long row, 0 everywhere but at ``ends``: 1 there (a step mask), or ``values`` (step labels)."""
    row = [0.0] * length
    for i, end in enumerate(ends):
        row[end] = 1.0 if values is None else float(values[i])
    return row
