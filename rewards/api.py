"""The reward authoring API: what a reward receives, what it must return, and the check.

A reward is either

* a **function** ``fn(prompt, response, ground_truth, **args) -> float`` (the
  built-ins are), scored one sample at a time, or
* a **class** whose constructor takes the config's ``args`` as keyword
  arguments and whose one method ``score(samples)`` (plain or ``async``) takes
  a list of ``RewardSample`` and returns, per sample, a float or a dict of
  named floats.

Either gets the prompt as the user wrote it (``RewardSample.prompt``: the prompt
string, or the last user message's text), never the chat template's rendering,
which would, for one, make a Hebrew question look Latin to
``language_consistency``; a learned reward model, which must be served the
encoding it was trained on, reads ``RewardSample.rendered_prompt``.

A dict's values are logged as ``reward/<term>/<key>``; the term's value is
their sum, except for keys starting with ``_``, which are only logged (as
``reward/<term>/<key without _>``, e.g. a judge's ``_unparseable`` flag). ``load_reward`` turns either kind into an object with ``score``;
``check_scores`` is the contract every result is held to, with a one-line
message naming the reward.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any



@dataclass(frozen=True)
class RewardSample:
    """One sample as a reward sees it."""

    prompt: str
    """The prompt as the user wrote it: the prompt string of the data row, or the text of its last user message
    (``rlcore.chat.user_text``), after the data transforms; never the chat template's rendering."""
    response: str
    """The response text."""
    response_ids: list[int]
    """The response's token ids, as sampled."""
    ground_truth: str
    """The data row's answer (``data.answer_key``)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The data row's other fields (and what data transforms add, e.g. L1's ``target_tokens``)."""
    thinking_tokens: int | None = None
    """Tokens inside the response's ``<think>`` block, counted by the rollout worker; None when it has none."""
    rendered_prompt: str | None = None
    """The prompt as the policy saw it, chat template (and ``data.system_prompt``) applied: for learned reward
    models trained on that encoding (``rlcore.reward_inputs``). None: the same as ``prompt`` (a hand-made sample)."""
    messages: list[dict] | None = None
    """A multi-turn episode's whole conversation after the prompt (assistant turns, tool and environment messages);
    ``response`` is its last assistant turn. None: single-turn."""
    environment: Any = None
    """The episode's environment instance after its episode, when a reward asks for it (TRL's ``environments``)."""
    env_return: float | None = None
    """The episode's score from its environment: a ``gym`` environment's summed step rewards, a ``trl`` one's
    ``get_reward()``; None without one."""


@dataclass(frozen=True)
class RewardTerm:
    """One ``reward.terms`` entry, resolved: its settings, the function or class, and its keyword arguments."""

    config: Any
    """The term's ``RewardTermConfig`` (name, weight, pool size, resources, timeout, failure score)."""
    target: Any
    """The reward function or class."""
    args: dict[str, Any]
    """Keyword arguments for ``target``: its parsed ``Options`` (all fields), or ``args`` as given."""

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Answer:
    """How a rule-based accuracy reward reads a response's final answer and compares two of them.

    A reward function exposes one as its ``answer`` attribute (``answer_match.answer``);
    majority voting and weighted best-of-N (``launch.evaluate``) group samples by it, so
    two samples vote together exactly when the task itself would call their answers equal.
    """

    extract: Callable[[str], str | None]
    """The final answer of a response, or None when it gives none (it then does not vote)."""
    same: Callable[[str, str], bool]
    """Whether two extracted answers are equal under the task's own equivalence."""


def stripped(text: str) -> str:
    """The whole response is the answer, stripped (the arithmetic task's format)."""
    return text.strip()


def answer_reading(target: Any) -> Answer:
    """The ``Answer`` of a reward ``target``; without one, the whole stripped response, compared as text."""
    return getattr(target, "answer", None) or Answer(stripped, lambda a, b: a == b)


class RewardContractError(ValueError):
    """A reward returned something other than one float (or dict of floats) per sample."""


class RewardStartError(RuntimeError):
    """A reward's constructor raised: one line, ``reward 'NAME' failed to start: <its message>``. The run stops."""


@dataclass(frozen=True)
class RewardFailure:
    """The first failure of one scoring call, as a reward worker reports it."""

    message: str
    """The error's message on one line (``error_line``)."""
    traceback: str = ""
    """Its traceback; empty when there is none (the actor died)."""


def error_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none): what the console shows of it."""
    return " ".join(str(exc).split()) or type(exc).__name__


EPISODE_ARGS = ("messages", "environment", "env_return")
"""``RewardSample`` fields a reward function receives as keyword arguments when its signature names them."""


class FunctionReward:
    """Adapts a reward function to the batched ``score`` interface.

    A function ``fn(prompt, response, ground_truth, **args)`` is scored one
    sample at a time; it also gets any of ``EPISODE_ARGS`` it names. A function
    with an ``environments`` parameter is TRL's batched form: called once with
    ``prompts``, ``completions`` (for an episode, its conversation as messages),
    ``environments``, ``ground_truth`` and the rows' other columns, each a list
    over the samples, and it returns one float per sample.
    """

    def __init__(self, fn, **args):
        self.fn, self.args = fn, args
        self.extras = [name for name in EPISODE_ARGS if name in _parameters(fn)]
        self.batched = "environments" in _parameters(fn)

    def score(self, samples: list[RewardSample]) -> list[float]:
        if self.batched:
            columns = {k: [s.metadata.get(k) for s in samples] for s in samples[:1] for k in s.metadata}
            return list(self.fn(prompts=[s.prompt for s in samples],
                                completions=[s.messages if s.messages is not None else s.response for s in samples],
                                environments=[s.environment for s in samples],
                                ground_truth=[s.ground_truth for s in samples], **columns, **self.args))
        return [self.fn(s.prompt, s.response, s.ground_truth, **{k: getattr(s, k) for k in self.extras}, **self.args)
                for s in samples]


def _parameters(fn) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return set()


def wants_environments(target: Any) -> bool:
    """Whether a reward reads the episodes' environment instances: a function with an ``environments`` (TRL) or
    ``environment`` parameter, or a class whose ``wants_environments`` attribute is true."""
    if inspect.isclass(target):
        return bool(getattr(target, "wants_environments", False))
    return bool({"environments", "environment"} & _parameters(target))


def check_reward(name: str, target: Any) -> None:
    """A one-line ``ValueError`` unless ``target`` is a function or a class with ``score(samples)``."""
    if inspect.isclass(target):
        if not callable(getattr(target, "score", None)):
            raise ValueError(f"reward {name!r}: class {target.__name__} has no score(samples) method")
    elif not callable(target):
        raise ValueError(f"reward {name!r} is not callable")


def build_reward(name: str, target: Any, args: dict[str, Any]):
    """An object with ``score(samples)`` from a resolved reward ``target`` and its keyword ``args``."""
    check_reward(name, target)
    return target(**args) if inspect.isclass(target) else FunctionReward(target, **args)


def load_reward(name: str, args: dict[str, Any] | None = None):
    """``build_reward`` for a reward given by name (built-in, ``module:function`` or ``module:Class``)."""
    from rewards.registry import REWARDS  # the registry imports the built-ins, which import this module

    return build_reward(name, REWARDS.resolve(name, "reward"), dict(args or {}))


def call_score(reward, samples: list[RewardSample]):
    """Run ``reward.score``, awaiting it when it is a coroutine function."""
    result = reward.score(samples)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def term_value(row: dict[str, float]) -> float:
    """A term's value from one sample's parts: their sum, leaving out ``_``-prefixed parts (logged only)."""
    return sum((v for k, v in row.items() if not k.startswith("_")), 0.0)  # a float also when every part is "_"


def check_scores(name: str, result: Any, count: int) -> list[dict[str, float]]:
    """Normalise ``result`` to one ``{key: value}`` per sample, or raise ``RewardContractError``.

    A float becomes ``{"": value}``; the empty key means "the term itself".
    """
    if not isinstance(result, (list, tuple)):
        raise RewardContractError(f"reward {name!r} returned {type(result).__name__}; "
                                  f"expected a list of {count} floats or dicts of floats")
    if len(result) != count:
        raise RewardContractError(f"reward {name!r} returned {len(result)} scores for {count} samples")
    out = []
    for i, value in enumerate(result):
        items = value.items() if isinstance(value, dict) else [("", value)]
        row = {}
        for key, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not isinstance(key, str):
                where = f"[{key!r}]" if key else ""
                raise RewardContractError(f"reward {name!r} returned {v!r} for sample {i}{where}; "
                                          "expected a finite float (or a dict of them keyed by str)")
            row[key] = float(v)
        if not row:
            raise RewardContractError(f"reward {name!r} returned an empty dict for sample {i}")
        out.append(row)
    return out
