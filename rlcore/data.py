"""Prompt data sets: loading with row-level validation, and a resumable order.

Files are JSONL (one object a line) or Parquet. Each row needs a prompt and an
answer field (names set by ``data.prompt_key`` / ``data.answer_key``); other
fields are kept as metadata. A bad row fails with the file, row number and what
was expected, before any worker starts.

A data transform (a plug-in named in ``data.transforms``) is a callable
``transform(rows, seed) -> rows`` that returns new rows (they are frozen; use
``dataclasses.replace``), e.g. L1's length target in ``rewards/l1.py``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file problem, with a one-line message naming the file and row."""


@dataclass(frozen=True, slots=True)
class PromptRow:
    index: int
    """Position in the concatenated data set."""
    prompt: Any
    """A string, or a list of ``{role, content}`` messages until ``launch.build.prepare`` renders it
    (``rlcore.chat.render_prompt``); a string after that."""
    answer: str
    source: str = ""
    """Where the row came from (``file line N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)
    templated: bool = False
    """The prompt text was made by the chat template (it holds its special tokens: tokenize without adding any)."""


@dataclass(frozen=True, slots=True)
class SFTRow:
    """One supervised example: a prompt and the response to learn, each a string or a list of messages.

    A conversational row (``data.messages_key``) is split before its first assistant
    turn: ``prompt`` is what precedes it, ``response`` that turn and all after it.
    """

    index: int
    """Position in the concatenated data set."""
    prompt: Any
    """A string or a list of ``{role, content}`` messages."""
    response: Any
    """A string, or a list of messages starting and ending with an assistant turn."""
    answer: str | None = None
    """Ground truth for task accuracy in evaluation (``data.answer_key``), when the row has one."""
    source: str = ""
    """Where the row came from (``file line N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """(row number, raw row) pairs; row numbers are 1-based lines for JSONL."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'rlcore[data]')") from None
        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .jsonl or .parquet")
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {line_no}: not valid JSON ({exc.msg})") from None
    return rows


def _located_rows(files: list[str | Path]):
    """``(source, row)`` for every row of ``files`` in order, ``source`` like ``path line 7``."""
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        where = "line" if path.suffix != ".parquet" else "row"
        rows = _read_rows(path)
        if not rows:
            raise DataError(f"{path}: no rows")
        for row_no, row in rows:
            yield f"{path} {where} {row_no}", row


def load_prompts(files: list[str | Path], prompt_key: str = "prompt", answer_key: str = "answer") -> list[PromptRow]:
    """All rows of ``files``, in order, validated."""
    out: list[PromptRow] = []
    for source, row in _located_rows(files):
        if not isinstance(row, dict):
            raise DataError(f"{source}: expected an object with '{prompt_key}' and '{answer_key}', "
                            f"got {type(row).__name__}")
        prompt, answer = row.get(prompt_key), row.get(answer_key)
        if not isinstance(prompt, str) or not prompt:
            raise DataError(f"{source}: expected a non-empty string in '{prompt_key}', got {prompt!r}")
        if answer is None or isinstance(answer, (dict, list)):
            raise DataError(f"{source}: expected a string or number in '{answer_key}', got {answer!r}")
        meta = {k: v for k, v in row.items() if k not in (prompt_key, answer_key)}
        out.append(PromptRow(index=len(out), prompt=prompt, answer=str(answer), source=source, metadata=meta))
    return out


@dataclass(frozen=True, slots=True)
class PreferenceRow:
    index: int
    """Position in the concatenated data set."""
    prompt: str
    chosen: str
    rejected: str
    source: str = ""
    """Where the row came from (``file line N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


def load_preferences(files: list[str | Path], prompt_key: str = "prompt", chosen_key: str = "chosen",
                     rejected_key: str = "rejected") -> list[PreferenceRow]:
    """Preference pairs (offline DPO), validated like prompts: each row needs three non-empty strings."""
    out: list[PreferenceRow] = []
    for source, row in _located_rows(files):
        values = []
        for key in (prompt_key, chosen_key, rejected_key):
            value = row.get(key) if isinstance(row, dict) else None
            if not isinstance(value, str) or not value:
                raise DataError(f"{source}: expected a non-empty string in '{key}' (preference rows need "
                                f"'{prompt_key}', '{chosen_key}', '{rejected_key}'), got {value!r}")
            values.append(value)
        meta = {k: v for k, v in row.items() if k not in (prompt_key, chosen_key, rejected_key)}
        out.append(PreferenceRow(len(out), *values, source=source, metadata=meta))
    return out


def check_prompt_lengths(rows: list[PromptRow], tokenizer, max_tokens: int) -> None:
    """Fail on the first prompt longer than ``max_tokens`` tokens, naming its file and row."""
    for row in rows:
        count = len(tokenizer.encode(row.prompt))
        if count > max_tokens:
            raise DataError(f"{row.source}: prompt has {count} tokens, more than data.max_prompt_tokens={max_tokens}")


class PromptSampler:
    """Deterministic batches of prompts: batch ``k`` depends only on (seed, k).

    Epoch ``e`` is a permutation seeded with ``(seed, e)``, and batches run
    through the concatenation of epochs. Nothing is stateful, so a resumed run
    that asks for batch ``k`` gets exactly what the uninterrupted run got.
    """

    def __init__(self, rows: list, batch_size: int, seed: int, shuffle: bool = True):
        if not rows:
            raise DataError("the prompt data set is empty")
        self.rows, self.batch_size, self.seed, self.shuffle = rows, batch_size, seed, shuffle
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int, draw: int) -> list[int]:
        key = (epoch, draw)
        if key not in self._orders:
            order = list(range(len(self.rows)))
            if self.shuffle or draw:
                random.Random(self.seed + epoch if draw == 0 else f"{self.seed}/{epoch}/{draw}").shuffle(order)
            self._orders = {key: order}  # keep one order: batches move forward
        return self._orders[key]

    def batch(self, step: int, draw: int = 0) -> list:
        """The prompts of training step ``step`` (1-based).

        ``draw > 0`` gives extra prompts for the same step (dynamic sampling),
        from an order of their own, also a pure function of (seed, step, draw).
        """
        start = (step - 1) * self.batch_size
        picked = []
        for pos in range(start, start + self.batch_size):
            epoch, i = divmod(pos, len(self.rows))
            picked.append(self.rows[self._order(epoch, draw)[i]])
        return picked
