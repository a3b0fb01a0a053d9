"""Tools for multi-turn rollouts: their JSON schemas, the model's tool-call text, and a chat template for both.

Both sides of one format, Qwen2.5's ("hermes"):

* what the model reads: each tool's OpenAI-style JSON schema (``tool_schema``,
  the same ``transformers.utils.get_json_schema`` output that TRL and
  ``apply_chat_template(tools=[callables])`` produce), listed in the system
  message by ``QWEN_TOOL_TEMPLATE``; tool answers come back as ``tool``
  messages, rendered as ``<tool_response>`` blocks in a user turn;
* what the model writes: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
  blocks, read back by ``parse_hermes``. ``TOOL_PARSERS`` maps a format name
  to its parser: another format is one function and one entry.

Environments follow TRL's ``environment_factory`` contract: an object with
``reset(**row)`` whose other public methods are its tools (``public_tools``).
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlcore.config import ConfigError, EnvConfig
from rlcore.plugins import import_path

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_TAGS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, "<tool_response>", "</tool_response>"]
"""Tags Qwen2.5's tokenizer has as added, non-special tokens: each is one token, and decoding keeps it."""

# Qwen2.5-Instruct's tool layout (its tokenizer_config.json), written anew. Differences: no default "You are
# Qwen..." system message (without one, the tools block opens the system turn, as in Qwen3's template), and
# string arguments of an assistant's tool call are written as they are (the JSON text an OpenAI-style client
# holds) instead of being quoted once more.
QWEN_TOOL_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
    " + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within '"
    " + '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": '"
    " + '<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Qwen2.5-Instruct's ChatML chat template with its tool layout: tool schemas in the system turn, an assistant's
``tool_calls`` as ``<tool_call>`` blocks, consecutive ``tool`` messages as ``<tool_response>`` blocks of one user
turn. Prefix-stable at every turn boundary (not inside a run of ``tool`` messages, whose turn closes after the last)."""


class ToolError(ValueError):
    """A function that cannot be offered as a tool; the message names it and says what is missing."""


def tool_schema(fn: Callable) -> dict:
    """The OpenAI-style schema ``{"type": "function", "function": {name, description, parameters[, return]}}`` of
    ``fn``, from its type hints and Google-style docstring (``transformers.utils.get_json_schema``, as TRL).

    A bound method's ``self`` is not a parameter. A return annotation adds a ``return`` entry, as in TRL.
    """
    from transformers.utils import get_json_schema
    from transformers.utils.chat_template_utils import (
        DocstringParsingException,
        TypeHintParsingException,
    )

    try:
        return get_json_schema(fn)
    except (DocstringParsingException, TypeHintParsingException) as exc:
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        raise ToolError(f"tool {name} cannot be described to the model: {exc} (a tool needs a type hint on every "
                        "argument and a docstring with an 'Args:' line for each)") from None


NOT_TOOLS = ("reset", "get_reward")
"""The public methods of a TRL-contract environment that are not tools."""


def public_tools(env: Any) -> dict[str, Callable]:
    """The tools of an environment object, by name: its public methods (names not starting with ``_``) except
    ``reset`` and ``get_reward`` (TRL's episode score), bound to ``env``, in name order. Properties and attributes
    are not tools (properties are not run)."""
    tools = {}
    for name in dir(type(env)):
        if name.startswith("_") or name in NOT_TOOLS:
            continue
        if isinstance(inspect.getattr_static(env, name), (types.FunctionType, staticmethod, classmethod)):
            tools[name] = getattr(env, name)
    return tools


@dataclass(frozen=True)
class Toolbox:
    """What an ``env`` section offers the model, resolved: the stateless tools, the environment class, and the
    JSON schemas of all the tools, which the chat template lists."""

    functions: dict[str, Callable]
    """``env.tools`` by name (a ``trl`` environment's tools are its own instance's methods)."""
    env_class: type | None
    """``env.path``, or None."""
    schemas: list[dict]
    """Every tool's schema (``tool_schema``): the functions', then a ``trl`` environment's methods'."""


def load_toolbox(cfg: EnvConfig, describe_tools: bool = True) -> Toolbox:
    """``cfg`` resolved; a one-line ``ConfigError`` naming the key and the function for a path
    that does not import, a tool without type hints or docstring, or two tools of one name. A ``trl`` environment is
    instantiated once to list its methods, as TRL does.

    ``describe_tools=False``: the functions and the environment class only, no schemas (an env actor's, whose driver
    has described and checked every tool): describing imports transformers, and torch with it, 1.6 s and 200 MB of
    every env actor on 2 cores."""
    schemas: list[dict] = []

    def describe(fn: Callable, key: str) -> None:
        if not describe_tools:
            return
        try:
            schema = tool_schema(fn)
        except ToolError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if any(s["function"]["name"] == schema["function"]["name"] for s in schemas):
            raise ConfigError(f"{key}: a second tool named '{schema['function']['name']}'; tool names must be unique")
        schemas.append(schema)

    functions = {}
    for i, path in enumerate(cfg.tools):
        fn = import_path(path, f"env.tools[{i}]")
        if not callable(fn):
            raise ConfigError(f"env.tools[{i}]='{path}' is not a function")
        describe(fn, f"env.tools[{i}]='{path}'")
        functions[fn.__name__] = fn
    env_class = import_path(cfg.path, "env.path") if cfg.path else None
    if env_class is not None and cfg.contract == "trl" and describe_tools:
        try:
            probe = env_class()
        except Exception as exc:  # noqa: BLE001 -- the user's constructor
            raise ConfigError(f"env.path='{cfg.path}': {env_class.__name__}() failed: {exc}") from None
        if not callable(getattr(probe, "reset", None)):
            raise ConfigError(f"env.path='{cfg.path}': {env_class.__name__} has no reset method (TRL's contract)")
        for method in public_tools(probe).values():
            describe(method, f"env.path='{cfg.path}'")
    return Toolbox(functions, env_class, schemas)


@dataclass(slots=True)
class ToolCall:
    """One function call the model wrote."""

    name: str
    """The function's name, as the model wrote it (it may name no tool)."""
    arguments: dict
    """Keyword arguments, decoded from the call's JSON."""


@dataclass(slots=True)
class ParsedTurn:
    """A model turn's text split into what it says and the calls it makes."""

    content: str
    """The text outside tool-call blocks, stripped."""
    calls: list[ToolCall]
    """The well-formed calls, in the order written."""
    malformed: list[str]
    """One short reason per tool-call block that is not a call (the model can be told, and rewards can count it)."""


def parse_hermes(text: str) -> ParsedTurn:
    """The calls in ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Qwen2.5's "hermes" format).

    ``arguments`` may also be a JSON string holding an object, as some models write it; missing, it is ``{}``.
    A block opened and never closed runs to the end of the text and is malformed.
    """
    outside, calls, malformed = [], [], []
    pos, index = 0, 0
    while (start := text.find(TOOL_CALL_OPEN, pos)) != -1:
        outside.append(text[pos:start])
        index += 1
        end = text.find(TOOL_CALL_CLOSE, start + len(TOOL_CALL_OPEN))
        if end == -1:
            malformed.append(f"tool call {index}: {TOOL_CALL_OPEN} is never closed by {TOOL_CALL_CLOSE}")
            pos = len(text)
            break
        call = _hermes_call(text[start + len(TOOL_CALL_OPEN):end])
        if isinstance(call, ToolCall):
            calls.append(call)
        else:
            malformed.append(f"tool call {index}: {call}")
        pos = end + len(TOOL_CALL_CLOSE)
    outside.append(text[pos:])
    return ParsedTurn(content="".join(outside).strip(), calls=calls, malformed=malformed)


def _hermes_call(body: str) -> ToolCall | str:
    """The call in one block's text, or why it is none."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(obj, dict):
        return f"JSON {type(obj).__name__}, not an object"
    name = obj.get("name")
    if not isinstance(name, str):
        return '"name" is missing or not a string'
    arguments = obj.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return '"arguments" is a string that is not JSON'
    if not isinstance(arguments, dict):
        return '"arguments" is not an object'
    return ToolCall(name=name, arguments=arguments)


TOOL_PARSERS: dict[str, Callable[[str], ParsedTurn]] = {"hermes": parse_hermes}
"""Tool-call formats by name: each reads a model turn's text into a ``ParsedTurn``."""
