"""Plug-in machinery shared by every kind: a name → class registry and typed options.

A plug-in is a class (or, for rewards, a function) found by a registered name or
by an import path ``module:attr``. It may declare ``Options``, a dataclass with
a docstring under every field; its config node is parsed into that dataclass,
so an unknown key or a wrong type is a one-line ``ConfigError`` naming the key.

This module knows no plug-in: the packages that hold them (``algorithms``,
``rewards``, ``actors``, ``launch``) each make their own ``Registry``, and the
composition root (``launch/build.py``) resolves them.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import textwrap
from typing import Any, Generic, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rlcore.config import ConfigError, allowed_keys, single_line

T = TypeVar("T")


class Registry(Generic[T]):
    """Built-in plug-ins of one kind by name; any other by import path ``module:attr``."""

    def __init__(self, kind: str, entries: dict[str, T] | None = None, path_hint: str = "module:Class"):
        self.kind = kind
        """What the plug-ins are, for messages: ``algorithm``, ``reward``, ``data transform``…"""
        self.entries: dict[str, T] = dict(entries or {})
        self.path_hint = path_hint
        """How an import path of this kind looks, for messages."""

    def register(self, name: str, entry: T) -> T:
        if name in self.entries and self.entries[name] is not entry:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self.entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self.entries)

    def resolve(self, name: str, key: str) -> T:
        """The plug-in called ``name``; ``key`` is the config key that named it, for the error."""
        if name in self.entries:
            return self.entries[name]
        if ":" not in name:
            raise ConfigError(f"{key}='{name}' is not a registered {self.kind}; registered: "
                              f"{', '.join(self.names())} (or give an import path '{self.path_hint}')")
        return import_path(name, key)


def import_path(name: str, key: str) -> Any:
    """``module:attr`` (``attr`` may be dotted) imported, or a one-line ``ConfigError`` naming ``key``. A module may be
    written as its file, relative to the import path (the working directory, or a Ray job's ``--working-dir``):
    ``my_tools.py:multiply`` is ``my_tools:multiply``, ``pkg/tools.py:f`` is ``pkg.tools:f``."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}='{name}': expected an import path 'module:attr'")
    if module_name.endswith(".py"):
        module_name = module_name[:-3].replace("/", ".")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(f"{key}='{name}': no module named '{module_name}'") from None
        raise ConfigError(f"{key}='{name}': importing '{module_name}' failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's module may fail in any way
        raise ConfigError(f"{key}='{name}': importing '{module_name}' failed: {_one_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}='{name}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def _one_line(exc: BaseException) -> str:
    return single_line(str(exc)) or type(exc).__name__


def options_class(plugin: Any) -> type | None:
    """The plug-in's ``Options`` dataclass, or None if it declares none."""
    options = getattr(plugin, "Options", None)
    return options if dataclasses.is_dataclass(options) else None


def parse_options(cls: type[T] | None, values: dict[str, Any], where: str) -> T | dict[str, Any]:
    """``values`` (a config node) as an instance of the options dataclass ``cls``.

    Without ``cls`` the values are returned as a plain dict, unchecked. ``where``
    is the node's config key (``algorithm``, ``reward.terms[1].args``) and prefixes
    every key named in an error.
    """
    values = OmegaConf.to_container(values) if OmegaConf.is_config(values) else dict(values or {})
    if cls is None:
        return values
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except ConfigKeyError as exc:
        key = getattr(exc, "full_key", "") or str(exc).splitlines()[0]
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        allowed = allowed_keys(cls, parent)
        inside = f"{where}.{parent}" if parent else where
        raise ConfigError(f"unknown key '{where}.{key}'; allowed under '{inside}': {allowed}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "")
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{where}.{key}: {first}" if key else f"{where}: {first}") from None
    except ValueError as exc:  # the options' own checks (``__post_init__``)
        raise ConfigError(f"{where}: {_one_line(exc)}") from None


def field_docs(cls: type) -> list[tuple[str, str, str, str]]:
    """``(field, type, default, docstring)`` of every field of the dataclass ``cls``, in order.

    Python keeps no attribute docstrings at run time, so they are read from the
    class's source with ``ast``. ``docs/config.md`` is generated from these, and
    a test checks that every field has one.
    """
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a subclass may redefine
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        docs.update({a.target.id: " ".join(str(b.value.value).split()) for a, b in zip(body, body[1:])
                     if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                     and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)})
    defaults = OmegaConf.to_container(OmegaConf.structured(cls))
    return [(f.name, _type_name(f.type), repr(defaults[f.name]), docs.get(f.name, ""))
            for f in dataclasses.fields(cls)]


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
