"""The reward authoring API: what a reward receives, what it must return, and the check.

A reward is either

* a **function** ``fn(prompt, response, ground_truth, **args) -> float`` (the
  built-ins are), scored one sample at a time; or one written for verl
  (``compute_score(data_source, solution_str, ground_truth, extra_info)``,
  ``VerlReward``) or for TRL (``fn(completions, prompts, **kwargs)`` per batch,
  ``TRLReward``), unchanged; or
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
    prompt_messages: list[dict] | None = None
    """The prompt as messages, for a conversational data row (TRL's ``prompts`` then hold them); None: a string
    prompt."""
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

NEEDS = {"verl": ("solution_str", "ground_truth")}
"""The parameters a verl reward function must take (by name, or through ``**kwargs``); a TRL one takes ``**kwargs``."""


def function_kind(fn, kind: str = "auto") -> str:
    """The calling convention of reward function ``fn``: ``kind`` itself unless auto; else ``verl`` when its
    parameters name ``data_source`` and ``solution_str`` (verl's ``compute_score``), ``trl`` when they name
    ``completions`` or ``environments`` (TRL's reward functions), ``native`` otherwise."""
    if kind != "auto":
        return kind
    params = _parameters(fn)
    if {"data_source", "solution_str"} <= params:
        return "verl"
    return "trl" if {"completions", "environments"} & params else "native"


def check_kind(name: str, target: Any, kind: str) -> None:
    """A one-line ``ValueError`` when a reward class is given a calling convention, or a function lacks the
    parameters its convention passes."""
    if inspect.isclass(target):
        if kind not in ("auto", "native"):
            raise ValueError(f"reward {name!r} is a class (score(samples)); kind={kind} is for functions only")
        return
    kind = function_kind(target, kind)
    params = inspect.signature(target).parameters
    if takes_kwargs(target):
        return
    if kind == "trl":
        raise ValueError(f"reward {name!r} is called as kind=trl, which passes every column as a keyword argument "
                         "(as TRL does), but takes no **kwargs")
    missing = [p for p in NEEDS.get(kind, ()) if p not in params]
    if missing:
        raise ValueError(f"reward {name!r} is called as kind={kind} but takes no {', '.join(missing)} parameter")


class FunctionReward:
    """Adapts a reward function of ours, ``fn(prompt, response, ground_truth, **args)``, to the batched ``score``
    interface: scored one sample at a time; it also gets any of ``EPISODE_ARGS`` it names."""

    def __init__(self, fn, **args):
        self.fn, self.args = fn, args
        self.extras = [name for name in EPISODE_ARGS if name in _parameters(fn)]

    def score(self, samples: list[RewardSample]) -> list[float]:
        return [self.fn(s.prompt, s.response, s.ground_truth, **{k: getattr(s, k) for k in self.extras}, **self.args)
                for s in samples]


class VerlReward:
    """verl's ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``, unchanged,
    one sample at a time. ``data_source`` and ``extra_info`` are the row's fields of those names (verl's data
    format), ``solution_str`` the response. It returns a number (a bool counts as 0 or 1), or a dict whose
    ``score`` is the term's value and whose other numbers are logged as ``reward/<term>/<key>`` (strings, such as a
    parsed prediction, are left out)."""

    def __init__(self, fn, **args):
        self.fn, self.args = fn, args
        self.extra_info = "extra_info" in _parameters(fn) or takes_kwargs(fn)

    def score(self, samples: list[RewardSample]) -> list[float | dict[str, float]]:
        return [self._one(s) for s in samples]

    def _one(self, s: RewardSample) -> float | dict[str, float]:
        extra = {"extra_info": s.metadata.get("extra_info")} if self.extra_info else {}
        result = self.fn(data_source=s.metadata.get("data_source"), solution_str=s.response,
                         ground_truth=s.ground_truth, **extra, **self.args)
        if not isinstance(result, dict):
            return float(result) if isinstance(result, bool) else result
        if "score" not in result:
            raise RewardContractError(f"compute_score returned a dict without 'score' (keys: {sorted(result)})")
        parts = {f"_{k}": float(v) for k, v in result.items()
                 if k != "score" and isinstance(v, (int, float)) and math.isfinite(v)}
        return {"": float(result["score"]), **parts}


class TRLReward:
    """A TRL reward function, unchanged: one call per batch,
    ``fn(prompts=..., completions=..., completion_ids=..., **kwargs) -> list[float | None]``.

    As TRL calls it: ``prompts`` are the prompt strings, or message lists for
    conversational rows; ``completions`` the response strings, or for
    conversational rows ``[{"role": "assistant", "content": ...}]`` (a multi-turn
    episode: its whole conversation after the prompt); the rows' other columns
    (the answer column too) arrive as keyword arguments, one list each, with
    ``environments`` (the episodes' environment instances), ``trainer_state``
    (None here), ``log_extra`` (accepted, not shown) and ``log_metric(name,
    value)``, whose values are logged as ``reward/<term>/<name>``. ``None`` for a
    sample means "not applicable": the term is NaN there and the other terms
    still count (``RewardGroup``), as in TRL.
    """

    def __init__(self, fn, **args):
        self.fn, self.args = fn, args

    def score(self, samples: list[RewardSample]) -> list[float | dict[str, float] | None]:
        conversational = [s.prompt_messages is not None or s.messages is not None for s in samples]
        logged: dict[str, float] = {}
        kwargs = {k: [s.metadata.get(k) for s in samples] for k in dict.fromkeys(k for s in samples for k in s.metadata)}
        kwargs.update(  # after the rows' columns: a column of one of these names does not shadow it
            prompts=[s.prompt_messages if s.prompt_messages is not None else s.prompt for s in samples],
            completions=[(s.messages if s.messages is not None else [{"role": "assistant", "content": s.response}])
                         if chat else s.response for s, chat in zip(samples, conversational)],
            completion_ids=[s.response_ids for s in samples], ground_truth=[s.ground_truth for s in samples],
            environments=[s.environment for s in samples], trainer_state=None, log_extra=lambda *a, **k: None,
            log_metric=lambda name, value: logged.__setitem__(f"_{name}", float(value)), **self.args)
        result = self.fn(**kwargs)
        if not logged or not isinstance(result, (list, tuple)):
            return result
        return [v if v is None else {"": v, **logged} for v in result]


def takes_kwargs(fn) -> bool:
    """Whether ``fn`` has a ``**kwargs`` parameter."""
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


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


def build_reward(name: str, target: Any, args: dict[str, Any], kind: str = "auto"):
    """An object with ``score(samples)`` from a resolved reward ``target`` and its keyword ``args``; a function is
    adapted by its calling convention (``function_kind``)."""
    check_reward(name, target)
    if inspect.isclass(target):
        return target(**args)
    adapter = {"native": FunctionReward, "verl": VerlReward, "trl": TRLReward}[function_kind(target, kind)]
    return adapter(target, **args)


def load_reward(name: str, args: dict[str, Any] | None = None, kind: str = "auto"):
    """``build_reward`` for a reward given by name (built-in, ``module:function`` or ``module:Class``)."""
    from rewards.registry import REWARDS  # the registry imports the built-ins, which import this module

    return build_reward(name, REWARDS.resolve(name, "reward"), dict(args or {}), kind)


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

    A float becomes ``{"": value}``; the empty key means "the term itself". ``None`` (TRL's "not applicable")
    becomes ``{"": nan}``: the sample has no value for this term, and the other terms still count.
    """
    if not isinstance(result, (list, tuple)):
        raise RewardContractError(f"reward {name!r} returned {type(result).__name__}; "
                                  f"expected a list of {count} floats or dicts of floats")
    if len(result) != count:
        raise RewardContractError(f"reward {name!r} returned {len(result)} scores for {count} samples")
    out = []
    for i, value in enumerate(result):
        if value is None:
            out.append({"": math.nan})
            continue
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
