"""``local://`` models and data sets, and ``reasoning_gym://`` data files: built on first use, cached under
``trainer.cache_dir``.

Users with their own model or data give ordinary paths instead; those are
checked to exist, and a model folder to hold what loading it needs
(``check_model_dir``), before any actor starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rlcore.tasks import multiply, reasoning, reasoning_gym
from rlcore.tasks.arithmetic import preference_rows, split_problems, write_jsonl

SCHEME = "local://"
REASONING_MODEL = "tiny-qwen2-reason"
SMALL_REASONING_MODEL = "tiny-qwen2-reason-small"
"""The reasoning model with half its layers (about half its parameters) and the same tokenizer: a distillation
student of the reasoning model."""
LARGE_REASONING_MODEL = "tiny-qwen2-reason-large"
"""The reasoning model twice as wide and half again as deep (about 6× its parameters) with the same tokenizer: a
verifier larger than the policy it judges (the README's verifier levers)."""
AGENT_MODEL = "tiny-qwen2-agent"


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


def _small_reasoning_model(path: Path) -> None:
    from rlcore.reasoning_model import ReasoningModelSpec, make_reasoning_model

    make_reasoning_model(path, ReasoningModelSpec(num_layers=2))


def _large_reasoning_model(path: Path) -> None:
    from rlcore.reasoning_model import ReasoningModelSpec, make_reasoning_model

    make_reasoning_model(path, ReasoningModelSpec(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4,
                                                  intermediate_size=1024))


def _agent_model(path: Path) -> None:
    from rlcore.agent_model import make_agent_model

    make_agent_model(path)


def _multiply(split: int, rows: Callable[[list[multiply.Multiplication]], list[dict]]) -> Callable[[Path], None]:
    """A builder writing ``rows`` of the multiplication task's train (``split=0``) or test (``split=1``) problems."""
    return lambda path: write_jsonl(rows(multiply.split_problems()[split]), path)


def _reasoning(split: int, rows: Callable[[list[reasoning.Addition]], list[dict]]) -> Callable[[Path], None]:
    """A builder writing ``rows`` of the reasoning task's train (``split=0``) or test (``split=1``) problems."""
    return lambda path: write_jsonl(rows(reasoning.split_problems()[split]), path)


def _reasoning_l1(split: int, mixed: bool = False) -> Callable[[Path], None]:
    """A builder of L1 SFT rows (``mixed``: a verbosity per column): their length targets are counted with the
    reasoning model's tokenizer, which is built first (or reused) in the same cache folder."""
    def build(path: Path) -> None:
        from rlcore.reasoning_model import load_thinking_counter, make_reasoning_model

        count = load_thinking_counter(make_reasoning_model(path.parent / REASONING_MODEL))
        write_jsonl(reasoning.l1_sft_rows(reasoning.split_problems()[split], count, seed=split, mixed=mixed), path)
    return build


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-qwen2-arith": _model,
    "arithmetic-train.jsonl": _train,
    "arithmetic-test.jsonl": _test,
    "arithmetic-prefs-train.jsonl": _prefs_train,
    "arithmetic-prefs-test.jsonl": _prefs_test,
    REASONING_MODEL: _reasoning_model,
    SMALL_REASONING_MODEL: _small_reasoning_model,
    LARGE_REASONING_MODEL: _large_reasoning_model,
    "reasoning-train.jsonl": _reasoning(0, reasoning.rl_rows),
    "reasoning-test.jsonl": _reasoning(1, reasoning.rl_rows),
    "reasoning-sft-train.jsonl": _reasoning(0, reasoning.sft_rows),
    "reasoning-sft-test.jsonl": _reasoning(1, reasoning.sft_rows),
    "reasoning-teacher-sft-train.jsonl": _reasoning(0, reasoning.teacher_sft_rows),
    "reasoning-l1-sft-train.jsonl": _reasoning_l1(0),
    "reasoning-l1-sft-test.jsonl": _reasoning_l1(1),
    "reasoning-l1-mixed-sft-train.jsonl": _reasoning_l1(0, mixed=True),
    "reasoning-l1-mixed-sft-test.jsonl": _reasoning_l1(1, mixed=True),
    AGENT_MODEL: _agent_model,
    "multiply-train.jsonl": _multiply(0, multiply.prompt_rows),
    "multiply-test.jsonl": _multiply(1, multiply.prompt_rows),
    "multiply-sft-train.jsonl": _multiply(0, multiply.sft_rows),
    "multiply-sft-test.jsonl": _multiply(1, multiply.sft_rows),
}
MODELS = ("tiny-qwen2-arith", REASONING_MODEL, SMALL_REASONING_MODEL, LARGE_REASONING_MODEL, AGENT_MODEL)
"""Assets whose builder checks its own cache marker, so it runs on every ``resolve`` (data files are built once)."""


class AssetError(ValueError):
    """A missing model or data path, an incomplete model folder, or an unknown ``local://`` name."""


def resolve(uri: str, cache_dir: str, what: str) -> str:
    """The filesystem path for ``uri``, building a ``local://`` asset or a ``reasoning_gym://`` data file
    (``rlcore.tasks.reasoning_gym``) if it is not cached yet.

    ``what`` names the config key, for the error message.
    """
    if uri.startswith(reasoning_gym.SCHEME):
        try:
            return reasoning_gym.build(uri, cache_dir, what)
        except reasoning_gym.ReasoningGymError as exc:
            raise AssetError(str(exc)) from exc
    if not uri.startswith(SCHEME):
        path = Path(uri).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise AssetError(f"{what}: path not found: {uri}{where}")
        return str(path.resolve())
    name = uri[len(SCHEME):]
    if name not in BUILDERS:
        raise AssetError(f"{what}: unknown local asset '{uri}'; known: "
                         + ", ".join(SCHEME + n for n in BUILDERS))
    path = Path(cache_dir).expanduser().resolve() / name
    if name in MODELS or not path.exists():
        BUILDERS[name](path)  # a model builder checks its own cache marker
    return str(path)


MODEL_FOLDER = "a Hugging Face model folder needs config.json, tokenizer files and weights"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json",
                   "vocab.txt")
"""Any one of these makes a folder's tokenizer (a fast tokenizer, its config, a sentencepiece model, a vocabulary)."""
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
"""Weights as transformers and vLLM look for them; a sharded model adds ``*.index.json`` naming its shards."""


def check_model_dir(path: str, key: str, tokenizer: bool = True, hint: str = "") -> dict[str, Any]:
    """The parsed config.json of the Hugging Face model folder at ``path``, after checking what loading it needs.

    A one-line ``AssetError`` naming the config ``key`` unless ``path`` is a folder with a readable config.json
    holding a JSON object with a ``model_type``, tokenizer files (``TOKENIZER_FILES``, when ``tokenizer``) and
    weights: ``WEIGHT_FILES``, or an ``*.index.json`` whose shards are all there; every weight file non-empty and
    readable. ``hint`` (what the folder should be, e.g. how to make it) ends the message. Reads config.json and the
    indexes only, never the weights, so it runs in a moment before Ray starts.
    """
    folder = Path(path)

    def fail(problem: str, needs: bool = True) -> NoReturn:
        raise AssetError(f"{key}: {problem}" + (f" ({MODEL_FOLDER})" if needs else "") + (f"; {hint}" if hint else ""))

    if not folder.is_dir():
        fail(f"{path} is not a folder")
    config = _json_object(folder / "config.json", fail)
    if not isinstance(config.get("model_type"), str):
        fail(f"{folder / 'config.json'} has no model_type: not a Hugging Face model config")
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        fail(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    shards: set[str] = set()
    for index in sorted(folder.glob("*.index.json")):
        weight_map = _json_object(index, fail).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            fail(f"{index} has no weight_map: not a sharded checkpoint's index", needs=False)
        names = sorted({str(v) for v in weight_map.values()})
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            fail(f"{index} names {missing[0]}, which is missing ({len(missing)} of {len(names)} shards missing)",
                 needs=False)
        shards.update(names)
    weights = sorted(shards | {p.name for pattern in WEIGHT_FILES for p in folder.glob(pattern) if p.is_file()})
    if not weights:
        fail(f"{path} has no weights ({' or '.join(WEIGHT_FILES)})")
    for name in weights:
        _readable(folder / name, fail)
    return config


def _json_object(file: Path, fail: Callable[..., NoReturn]) -> dict[str, Any]:
    """The JSON object in ``file``, or ``fail(problem)`` saying why not."""
    if not file.exists():
        fail(f"{file.parent} has no {file.name}")
    if not file.is_file():
        fail(f"{file} is not a file")
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{file} cannot be read ({exc.strerror or exc})", needs=False)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        fail(f"{file} is not valid JSON ({' '.join(str(exc).split())})", needs=False)
    if not isinstance(value, dict):
        fail(f"{file} is not a JSON object", needs=False)
    return value


def _readable(file: Path, fail: Callable[..., NoReturn]) -> None:
    try:
        with open(file, "rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        fail(f"{file} cannot be read ({exc.strerror or exc})", needs=False)
    if empty:
        fail(f"{file} is empty: a copy or download cut short?", needs=False)


def model_context(config: dict[str, Any]) -> int | None:
    """The longest sequence a model's config.json allows, its ``max_position_embeddings`` (``text_config``'s for a
    model that has one); None without one, or with RoPE scaling, which changes the limit vLLM derives from it."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    length = text.get("max_position_embeddings")
    scaling = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(scaling, dict) and any(isinstance(v, dict) or k == "factor" for k, v in scaling.items()):
        return None
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
