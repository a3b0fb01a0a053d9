"""``local://`` models and data sets: built on first use, cached under ``trainer.cache_dir``.

Users with their own model or data give ordinary paths instead; those are
only checked to exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rlcore.tasks.arithmetic import preference_rows, split_problems, write_jsonl

SCHEME = "local://"


def _train(path: Path) -> None:
    write_jsonl(split_problems()[0], path)


def _test(path: Path) -> None:
    write_jsonl(split_problems()[1], path)


def _prefs_train(path: Path) -> None:
    write_jsonl(preference_rows(split_problems()[0], seed=1), path)


def _prefs_test(path: Path) -> None:
    write_jsonl(preference_rows(split_problems()[1], seed=2), path)


def _model(path: Path) -> None:
    from rlcore.local_model import make_local_model

    make_local_model(path)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-qwen2-arith": _model,
    "arithmetic-train.jsonl": _train,
    "arithmetic-test.jsonl": _test,
    "arithmetic-prefs-train.jsonl": _prefs_train,
    "arithmetic-prefs-test.jsonl": _prefs_test,
}


class AssetError(ValueError):
    """A missing model or data path, or an unknown ``local://`` name."""


def resolve(uri: str, cache_dir: str, what: str) -> str:
    """The filesystem path for ``uri``, building a ``local://`` asset if it is not cached yet.

    ``what`` names the config key, for the error message.
    """
    if not uri.startswith(SCHEME):
        path = Path(uri).expanduser()
        if not path.exists():
            raise AssetError(f"{what}: path not found: {uri}")
        return str(path.resolve())
    name = uri[len(SCHEME):]
    if name not in BUILDERS:
        raise AssetError(f"{what}: unknown local asset '{uri}'; known: "
                         + ", ".join(SCHEME + n for n in BUILDERS))
    path = Path(cache_dir).expanduser().resolve() / name
    if name == "tiny-qwen2-arith" or not path.exists():
        BUILDERS[name](path)  # the model builder checks its own cache marker
    return str(path)
