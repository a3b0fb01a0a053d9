"""One multi-turn episode as token ids: the model's sampled turns, the environment's messages spliced between them.

Token in, token out: the learner trains exactly the ids the engine sampled.
The conversation is never re-rendered and re-tokenized (decoding and encoding
again need not give the sampled ids back: TRL #5224, SkyRL #123). What the
environment says (tool answers, a user's reply) is rendered once, as the chat
template's text for the new messages (``message_delta``), and appended as ids
with mask 0. That text starts right after the end-of-turn token the model
sampled, so whatever the template writes after it (Qwen's ``\\n``) is an
environment token the model never sampled (verl #3720).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlcore.chat import ChatError, Message, render_template

FAULTS = ("tool_errors", "tool_timeouts", "malformed_calls", "tool_answers_cut", "redone")
"""What goes wrong in an episode, counted: a tool that raised (or was unknown, or got wrong arguments), a tool call
past ``env.timeout_s``, a malformed call, a tool answer cut to ``env.max_tool_tokens``, a start again after its env
actor died."""

ANCHOR: list[Message] = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
"""A conversation ending with a finished assistant turn: ``message_delta`` renders new messages after it."""


def message_delta(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """The ids that continue a trajectory whose last model turn ended with the tokenizer's EOS (its end-of-turn
    token) with ``messages`` (``tool`` messages or a ``user`` message), then the next assistant turn's header.

    The text is what the chat template writes after the EOS of ``ANCHOR``'s assistant turn when ``ANCHOR +
    messages`` is rendered with the generation prompt (and ``tools``, which must be the prompt's), tokenized with
    ``add_special_tokens=False``. The trajectory's own earlier turns are not needed: a prefix-stable template
    writes the same text after any finished assistant turn. A template that rewrites earlier turns, or writes no
    EOS after an assistant turn, is reported.
    """
    name = getattr(tokenizer, "name_or_path", "?")
    eos = tokenizer.eos_token
    before = render_template(tokenizer, ANCHOR, False, tools)
    if not eos or eos not in before:
        raise ChatError(f"the chat template of {name} writes no EOS ({eos!r}) after an assistant turn, so the "
                        "end of a model turn cannot be found; set the tokenizer's eos_token to its end-of-turn token")
    end = before.rindex(eos) + len(eos)
    after = render_template(tokenizer, ANCHOR + list(messages), True, tools)
    if not after.startswith(before[:end]):
        raise ChatError(f"the chat template of {name} is not prefix-stable (it rewrites earlier turns when "
                        f"{', '.join(m['role'] for m in messages)} messages follow), so they cannot be spliced "
                        "onto sampled ids")
    return tokenizer.encode(after[end:], add_special_tokens=False)


@dataclass(kw_only=True, slots=True)
class Trajectory:
    """An episode's tokens as the engine saw them, with what the learner needs per token.

    ``ids``, ``mask`` and ``logprobs`` always have the same length, at most ``max_total_tokens``.
    """

    prompt_ids: list[int]
    """The rendered prompt, ending with the first assistant turn's header."""
    max_total_tokens: int
    """Cap on ``len(ids)``: model and environment tokens together, the prompt not counted."""
    ids: list[int] = field(default_factory=list)
    """Everything after the prompt: model turns and environment deltas, in order."""
    mask: list[float] = field(default_factory=list)
    """1.0 on tokens the model sampled (each turn up to and including its EOS), 0.0 on environment and template
    tokens."""
    logprobs: list[float] = field(default_factory=list)
    """The sampler's log-probability of each model token; 0.0 on environment tokens."""
    messages: list[dict] = field(default_factory=list)
    """The conversation as messages, for logs and rewards: the prompt's, as the caller gives them, then each model
    turn's text as an assistant message and the environment's messages (also those whose ids were cut)."""
    model_tokens: int = 0
    """Tokens the model sampled."""
    env_tokens: int = 0
    """Tokens the environment and the template added after the prompt."""
    turns: int = 0
    """Model turns."""
    tool_calls: int = 0
    """``tool`` messages the environment answered with: one per call the model made."""
    truncated: bool = False
    """The cap cut the episode short."""
    done: bool = False
    """The episode is over: nothing more is appended."""

    def context(self) -> list[int]:
        """What the engine continues: the prompt and everything after it."""
        return self.prompt_ids + self.ids

    def remaining(self) -> int:
        """Tokens left under the cap: the most the next model turn may sample."""
        return self.max_total_tokens - len(self.ids)

    def add_model_turn(self, ids: list[int], logprobs: list[float], text: str) -> None:
        """Append a sampled turn (its ids end with the EOS unless the engine stopped on length) and its text."""
        if len(logprobs) != len(ids):
            raise ValueError(f"a model turn has {len(ids)} token ids but {len(logprobs)} log-probs")
        if len(ids) > self.remaining():
            raise ValueError(f"a model turn of {len(ids)} tokens passes max_total_tokens ({self.max_total_tokens}, "
                             f"{self.remaining()} left); sample at most remaining() tokens")
        self.ids += ids
        self.mask += [1.0] * len(ids)
        self.logprobs += logprobs
        self.messages.append({"role": "assistant", "content": text})
        self.model_tokens += len(ids)
        self.turns += 1

    def add_env(self, ids: list[int], messages: list[dict]) -> bool:
        """Append the environment's ids (mask 0) and messages. False when the cap cut the ids: the episode keeps
        only the ids that fit. Cut, or filling the cap exactly (no room for the model's next turn), the episode is
        ``truncated`` and ``done``."""
        kept = ids[:self.remaining()]
        self.ids += kept
        self.mask += [0.0] * len(kept)
        self.logprobs += [0.0] * len(kept)
        self.messages += messages
        self.env_tokens += len(kept)
        self.tool_calls += sum(m["role"] == "tool" for m in messages)
        if len(kept) < len(ids) or self.remaining() == 0:  # no room left for the model's next turn
            self.truncated = self.done = True
        return len(kept) == len(ids)
