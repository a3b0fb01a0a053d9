"""EnvWorker: hosts the environments of trajectories and runs their tool calls.

One actor holds many episodes, each under a key the rollout worker chose: an
instance of the user's environment class (``env.path``), reset with the data
row, and the stateless tool functions (``env.tools``) shared by all. Two
contracts for the class (``env.contract``):

* ``trl``, TRL's ``environment_factory``: ``__init__()`` takes nothing,
  ``reset(**row)`` returns an observation string or None, every other public
  method is a tool, and an optional ``get_reward()`` scores the episode;
* ``gym``, the text-game shape of GEM and skyrl-gym: ``reset(seed=..., **row)``
  returns ``(observation, info)`` and ``step(text)`` takes the model's whole turn
  and returns ``(observation, reward, terminated, truncated, info)``.

A tool never fails this actor: an unknown name, arguments the function does not
take, an exception or a call past ``env.timeout_s`` come back as the tool's
answer, an error the model reads (TRL's ``{'error': ...}``), with a status the
rollout worker counts. A hung call keeps its thread; the episode goes on
without it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlcore.config import EnvConfig
from rlcore.tools import ToolCall, load_toolbox, public_tools

OK, ERROR, TIMEOUT, UNKNOWN, BAD_ARGS = "ok", "error", "timeout", "unknown_tool", "bad_arguments"
"""A tool call's outcome, as ``ToolResult.status``."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call's answer, as the model will read it in a ``tool`` message."""

    name: str
    """The tool the model named."""
    content: str
    """``str(return value)``, or ``str({'error': message})`` (TRL's form) when the call failed."""
    status: str = OK
    """``ok``, ``error`` (it raised), ``timeout``, ``unknown_tool`` or ``bad_arguments``."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """A ``gym``-contract environment's answer to one model turn."""

    observation: str
    reward: float
    done: bool
    """``terminated or truncated``."""


class EnvWorker:
    """The environments of the episodes given to this actor, and the tools they may call."""

    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        box = load_toolbox(cfg, describe_tools=False)  # the driver described them (launch.build.configure)
        self.env_class, self.tools = box.env_class, box.functions
        self.episodes: dict[int, Any] = {}
        self.returns: dict[int, float] = {}
        # Threads for the calls of a turn; a call past the timeout keeps its thread, so there are many.
        self.threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="tool")

    def ready(self) -> bool:
        return True

    def open(self, keys: list[int], rows: list[dict], seeds: list[int]) -> list[str | None]:
        """Start an episode per key: a new environment instance reset with its row (and seed, ``gym``); returns each
        one's first observation (None: none), which the rollout worker appends to the prompt's last message."""
        observations = []
        for key, row, seed in zip(keys, rows, seeds):
            if self.env_class is None:
                self.episodes[key], observation = None, None
            elif self.cfg.contract == "gym":
                env = self.env_class()
                observation, _ = env.reset(seed=seed, **row)
                self.episodes[key] = env
            else:
                env = self.env_class()
                observation = env.reset(**row)
                self.episodes[key] = env
            self.returns[key] = 0.0
            observations.append(None if observation is None else str(observation))
        return observations

    async def call(self, requests: list[tuple[int, list[ToolCall]]]) -> list[list[ToolResult]]:
        """Run each episode's calls of this turn: the episodes at the same time, one episode's calls in order.
        (An ``async`` method makes this an asyncio actor: Ray runs its methods on its own event loop.)"""
        return list(await asyncio.gather(*(self._episode_calls(k, calls) for k, calls in requests)))

    async def _episode_calls(self, key: int, calls: list[ToolCall]) -> list[ToolResult]:
        tools = dict(self.tools)
        if self.episodes.get(key) is not None:
            tools.update(public_tools(self.episodes[key]))
        return [await self._call(tools, call) for call in calls]

    async def _call(self, tools: dict, call: ToolCall) -> ToolResult:
        fn = tools.get(call.name)
        if fn is None:
            return ToolResult(call.name, str({"error": f"Tool {call.name} not found."}), UNKNOWN)
        try:
            inspect.signature(fn).bind(**call.arguments)
        except TypeError as exc:
            return ToolResult(call.name, str({"error": f"{call.name}: {exc}"}), BAD_ARGS)
        work = (fn(**call.arguments) if inspect.iscoroutinefunction(fn) else
                asyncio.get_running_loop().run_in_executor(self.threads, functools.partial(fn, **call.arguments)))
        try:
            result = await asyncio.wait_for(work, self.cfg.timeout_s)
        except TimeoutError:
            return ToolResult(call.name, str({"error": f"{call.name} timed out after {self.cfg.timeout_s:g} s"}),
                              TIMEOUT)
        except Exception as exc:  # noqa: BLE001 -- the user's tool: anything may come out; the model reads it
            return ToolResult(call.name, str({"error": str(exc) or type(exc).__name__}), ERROR)
        return ToolResult(call.name, str(result))

    def step(self, requests: list[tuple[int, str]]) -> list[StepResult]:
        """A ``gym`` environment's step for each episode's model turn (its whole text)."""
        out = []
        for key, text in requests:
            observation, reward, terminated, truncated, _ = self.episodes[key].step(text)
            self.returns[key] += float(reward)
            out.append(StepResult(str(observation), float(reward), bool(terminated or truncated)))
        return out

    def close(self, keys: list[int], ship: bool) -> list[dict[str, Any]]:
        """End the episodes: per key ``{"return": ...}`` (a ``gym`` environment's summed step rewards, or a ``trl``
        one's ``get_reward()``, None without either) and, with ``ship``, ``"environment"``: the instance itself, for
        rewards that read it (TRL's ``environments``)."""
        out = []
        for key in keys:
            env = self.episodes.pop(key, None)
            value = self.returns.pop(key, 0.0)
            if self.cfg.contract != "gym":
                value = float(env.get_reward()) if callable(getattr(env, "get_reward", None)) else None
            out.append({"return": value, **({"environment": env} if ship else {})})
        return out
