"""``local://`` models and data sets: built on first use, cached under ``trainer.cache_dir``.

Users with their own model or data give ordinary paths instead; those are
only checked to exist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlcore.tasks import reasoning
from rlcore.tasks.arithmetic import preference_rows, split_problems, write_jsonl

SCHEME = "local://"
REASONING_MODEL = "tiny-qwen2-reason"


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


def _reasoning_model(path: Path) -> None:
    from rlcore.reasoning_model import make_reasoning_model

    make_reasoning_model(path)


def _reasoning(split: int, rows: Callable[[list[reasoning.Addition]], list[dict]]) -> Callable[[Path], None]:
    """A builder writing ``rows`` of the reasoning task's train (``split=0``) or test (``split=1``) problems."""
    return lambda path: write_jsonl(rows(reasoning.split_problems()[split]), path)


def _reasoning_l1(split: int) -> Callable[[Path], None]:
    """A builder of L1 SFT rows: their length targets are counted with the reasoning model's tokenizer,
    which is built first (or reused) in the same cache folder."""
    def build(path: Path) -> None:
        from rlcore.reasoning_model import load_thinking_counter, make_reasoning_model

        count = load_thinking_counter(make_reasoning_model(path.parent / REASONING_MODEL))
        write_jsonl(reasoning.l1_sft_rows(reasoning.split_problems()[split], count, seed=split), path)
    return build


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-qwen2-arith": _model,
    "arithmetic-train.jsonl": _train,
    "arithmetic-test.jsonl": _test,
    "arithmetic-prefs-train.jsonl": _prefs_train,
    "arithmetic-prefs-test.jsonl": _prefs_test,
    REASONING_MODEL: _reasoning_model,
    "reasoning-train.jsonl": _reasoning(0, reasoning.rl_rows),
    "reasoning-test.jsonl": _reasoning(1, reasoning.rl_rows),
    "reasoning-sft-train.jsonl": _reasoning(0, reasoning.sft_rows),
    "reasoning-sft-test.jsonl": _reasoning(1, reasoning.sft_rows),
    "reasoning-l1-sft-train.jsonl": _reasoning_l1(0),
    "reasoning-l1-sft-test.jsonl": _reasoning_l1(1),
}
MODELS = ("tiny-qwen2-arith", REASONING_MODEL)
"""Assets whose builder checks its own cache marker, so it runs on every ``resolve`` (data files are built once)."""


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
    if name in MODELS or not path.exists():
        BUILDERS[name](path)  # a model builder checks its own cache marker
    return str(path)
