"""Data sets: prompts, preference pairs, SFT conversations and step labels, validated row by row, and a resumable order.

Files (``data.train_files``, ``data.eval_files``), read in order:

* JSONL (``.jsonl`` or ``.json``, one object a line): rows are named ``path line N``;
* a ``.parquet`` file, or a folder of Parquet shards read in sorted name order
  (``path row N``, the shard's own path for a folder), as verl's data sets come;
* a folder written by ``datasets.Dataset.save_to_disk``: its ``state.json`` lists
  Arrow IPC stream shards, read with pyarrow alone (no ``datasets`` at run time).

Field names are set by ``data.*_key``. A dotted key reaches a nested field
(``reward_model.ground_truth`` reads ``row["reward_model"]["ground_truth"]``,
verl's format) unless the row has a top-level field with that literal name. A
prompt, an SFT response and a preferred or rejected response are each a
non-empty string or a list of ``{role, content}`` messages (``rlcore.chat``, the
formats TRL calls standard and conversational). The top-level fields a key did
not name are kept as metadata (a nested key's parent stays: it may hold more,
like verl's ``reward_model.style``; a prompt row keeps its answer column too, as
TRL's reward functions read it). A bad row fails with the file, row number
and field, before any worker starts.

A data transform (a plug-in named in ``data.transforms``) is a callable
``transform(rows, seed) -> rows`` that returns new rows (they are frozen; use
``dataclasses.replace``), e.g. L1's length target in ``rewards/l1.py``. After the
transforms, ``render_prompts`` turns message-list prompts into the chat
template's text.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcore.chat import (
    ChatError,
    Message,
    check_messages,
    encode_prompt,
    prompt_messages,
    render_prompt,
    user_text,
)


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
    """Where the row came from (``file line N``, ``file row N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)
    templated: bool = False
    """The prompt text was made by the chat template (it holds its special tokens: tokenize without adding any)."""
    user_prompt: str | None = None
    """What the user wrote (``rlcore.chat.user_text``), kept when ``render_prompts`` replaces ``prompt`` with the
    template's rendering; None while ``prompt`` is still the row's own."""
    messages: list[dict] | None = None
    """The messages ``prompt`` was rendered from, kept by ``render_prompts`` for runs with tools: an episode whose
    environment answers ``reset`` renders them again with the observation appended (``actors.episodes``)."""

    def user_text(self) -> str:
        """The prompt as the user wrote it (the last user message's text): what rewards judge."""
        return self.user_prompt if self.user_prompt is not None else user_text(self.prompt)


@dataclass(frozen=True, slots=True)
class SFTRow:
    """One supervised example: a prompt and the response to learn, each a string or a list of messages.

    A conversational row (``data.messages_key``) is split before its first assistant
    turn: ``prompt`` is what precedes it, ``response`` that turn and all after it up
    to the last assistant turn (``split_conversation``).
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
    """Where the row came from (``file line N``, ``file row N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _pyarrow(path: Path):
    try:
        import pyarrow
    except ImportError:
        raise DataError(f"{path}: reading Parquet or Arrow files needs pyarrow (pip install 'rlcore[data]')") from None
    return pyarrow


def _numbered(path: Path, rows: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{path} row {n}", row) for n, row in enumerate(rows, start=1)]


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path} line {line_no}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {line_no}: not valid JSON ({exc.msg})") from None
    return rows


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    pa = _pyarrow(path)
    import pyarrow.parquet as pq

    try:
        return _numbered(path, pq.read_table(path).to_pylist())
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None


def _read_arrow_stream(path: Path) -> list[tuple[str, Any]]:
    pa = _pyarrow(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path} (listed in {path.parent / 'state.json'})")
    try:
        with pa.OSFile(str(path)) as f:
            return _numbered(path, pa.ipc.open_stream(f).read_all().to_pylist())
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable Arrow stream ({_one_line(exc)})") from None


def _read_saved_dataset(folder: Path) -> list[tuple[str, Any]]:
    """A ``datasets.Dataset.save_to_disk`` folder: the Arrow stream shards its ``state.json`` lists, in order."""
    state = folder / "state.json"
    try:
        shards = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{state}: not a datasets save_to_disk state (no list of '_data_files': {_one_line(exc)})") \
            from None
    return [located for name in shards for located in _read_arrow_stream(folder / name)]


def _read_folder(folder: Path) -> list[tuple[str, Any]]:
    if (folder / "state.json").is_file():
        return _read_saved_dataset(folder)
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise DataError(f"{folder}: a DatasetDict folder (splits: {', '.join(splits) or 'none'}); name one split's "
                        f"folder, e.g. {folder / (splits[0] if splits else 'train')}")
    shards = sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file())
    if not shards:
        raise DataError(f"{folder}: a folder with no .parquet shards and no state.json (datasets save_to_disk)")
    return [located for shard in shards for located in _read_parquet(shard)]


def read_rows(path: str | Path) -> list[tuple[str, Any]]:
    """``(source, raw row)`` for each row of a data file or folder; ``source`` is ``path line N`` or ``path row N``."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .jsonl, .parquet, a folder of Parquet shards "
                    "or a datasets save_to_disk folder")


def _located_rows(files: list[str | Path]):
    """``(source, row)`` for every row of ``files`` in order, each free of invalid Unicode (``invalid_text``)."""
    for name in files:
        rows = read_rows(name)
        if not rows:
            raise DataError(f"{name}: no rows")
        for source, row in rows:
            bad = invalid_text(row)
            if bad is not None:
                raise DataError(f"{source}: invalid Unicode in {bad}")
            yield source, row


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def invalid_text(value: Any, where: str = "") -> str | None:
    """Where ``value`` holds a string that is not valid Unicode, or None: ``'prompt'``, ``'messages[1].content'``,
    ``'reward_model.ground_truth'`` (a field name: the field holding it; ``a field name`` at the top).

    JSON may escape half of a UTF-16 surrogate pair (``"\\ud800"``); it loads as a lone surrogate, which no
    tokenizer encodes (a ``TypeError`` naming no file or row) and no log can write.
    """
    if isinstance(value, str):
        return None if value.isascii() or _encodable(value) else f"'{where}'"
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _encodable(key):
                return f"'{where}'" if where else "a field name"
            found = invalid_text(item, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = invalid_text(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def field_value(row: dict[str, Any], key: str) -> Any:
    """``row[key]``; for a dotted key absent at the top level, the nested field it names. None when there is none.

    ``field_value({"reward_model": {"ground_truth": "4"}}, "reward_model.ground_truth") == "4"``.
    """
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _object(row: Any, source: str, fields: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{source}: expected an object with {fields}, got {type(row).__name__}")
    return row


def _metadata(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in keys}


def _text_or_messages(value: Any, source: str, key: str, hint: str = "") -> str | list[Message]:
    """A non-empty string, or a checked message list; a ``DataError`` naming ``source`` and ``key`` otherwise."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value:
        try:
            return check_messages(value, key)
        except ChatError as exc:
            raise DataError(f"{source}: {exc}") from None
    raise DataError(f"{source}: expected a non-empty string in '{key}' or a list of {{role, content}} messages{hint}, "
                    f"got {_short(value)}")


def _reply(value: Any, source: str, key: str, prompt_key: str, hint: str = "") -> str | list[Message]:
    """A response: a non-empty string, or messages that start and end with an assistant turn."""
    reply = _text_or_messages(value, source, key, hint)
    if isinstance(reply, list) and (reply[0]["role"] != "assistant" or reply[-1]["role"] != "assistant"):
        roles = ", ".join(m["role"] for m in reply)
        raise DataError(f"{source}: '{key}' must start and end with an assistant message, got roles [{roles}]; "
                        f"the turns before the first reply belong in '{prompt_key}'")
    return reply


def _answer(value: Any, source: str, key: str) -> str:
    if value is None or isinstance(value, (dict, list, tuple)):
        raise DataError(f"{source}: expected a string or number in '{key}', got {_short(value)}")
    return str(value)


def row_messages(rows: list[PromptRow], n: int = 1) -> list[list[Message] | None] | None:
    """Each row's messages (None for a string prompt), ``n`` times in a row: ``RolloutBatch.prompt_messages``; None
    when no row has any."""
    if all(row.messages is None for row in rows):
        return None
    return [row.messages for row in rows for _ in range(n)]


def load_prompts(files: list[str | Path], prompt_key: str = "prompt", answer_key: str = "answer") -> list[PromptRow]:
    """All rows of ``files``, in order, validated: a prompt (string or messages) and an answer (string or number)."""
    out: list[PromptRow] = []
    for source, row in _located_rows(files):
        row = _object(row, source, f"'{prompt_key}' and '{answer_key}'")
        prompt = _text_or_messages(field_value(row, prompt_key), source, prompt_key)
        answer = _answer(field_value(row, answer_key), source, answer_key)
        out.append(PromptRow(index=len(out), prompt=prompt, answer=answer, source=source,
                             metadata=_metadata(row, (prompt_key,))))  # the answer column too: TRL's rewards read it
    return out


@dataclass(frozen=True, slots=True)
class PreferenceRow:
    index: int
    """Position in the concatenated data set."""
    prompt: Any
    """A string or a list of ``{role, content}`` messages."""
    chosen: Any
    """The preferred response: a string, or a list of messages starting and ending with an assistant turn."""
    rejected: Any
    """The dispreferred response, like ``chosen``."""
    source: str = ""
    """Where the row came from (``file line N``, ``file row N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


def load_preferences(files: list[str | Path], prompt_key: str = "prompt", chosen_key: str = "chosen",
                     rejected_key: str = "rejected") -> list[PreferenceRow]:
    """Preference pairs (offline DPO), validated like prompts.

    Each row needs a prompt and two responses, each a non-empty string or a message list;
    in TRL's conversational format the responses are lists of assistant messages.
    """
    keys = (prompt_key, chosen_key, rejected_key)
    hint = f" (preference rows need '{prompt_key}', '{chosen_key}', '{rejected_key}')"
    out: list[PreferenceRow] = []
    for source, row in _located_rows(files):
        row = _object(row, source, f"'{prompt_key}', '{chosen_key}' and '{rejected_key}'")
        prompt = _text_or_messages(field_value(row, prompt_key), source, prompt_key, hint)
        chosen, rejected = (_reply(field_value(row, key), source, key, prompt_key, hint) for key in keys[1:])
        out.append(PreferenceRow(len(out), prompt, chosen, rejected, source=source, metadata=_metadata(row, keys)))
    return out


@dataclass(frozen=True, slots=True)
class StepRow:
    """A response cut into steps, each labelled good or bad: a process reward model's training example.

    Written by ``launch.label_steps``, one JSON object a line: ``{"prompt", "steps", "hard_labels", "soft_labels",
    "answer", "correct"}``; the fields a key did not name stay in ``metadata``.
    """

    index: int
    """Position in the concatenated data set."""
    prompt: Any
    """A string or a list of ``{role, content}`` messages (rendered with the chat template by the source)."""
    steps: list[str]
    """The response's steps, in order, each non-empty; joined they are the response."""
    labels: list[float]
    """One label in [0, 1] per step: 1 a good step, 0 a bad one (hard labels), or the share of rollouts from the
    step that reach the right answer (Math-Shepherd's soft labels)."""
    source: str = ""
    """Where the row came from (``file line N``, ``file row N``), for error messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


def _steps(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{source}: expected a non-empty list of steps (strings) in '{key}', got {_short(value)}")
    for i, step in enumerate(value):
        if not isinstance(step, str) or not step:
            raise DataError(f"{source}: '{key}[{i}]' must be a non-empty string, got {_short(step)}")
    return list(value)


def _labels(value: Any, source: str, key: str, count: int, steps_key: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{source}: expected a list of step labels (numbers in [0, 1]) in '{key}', got {_short(value)}")
    if len(value) != count:
        raise DataError(f"{source}: '{key}' has {len(value)} labels for the {count} steps of '{steps_key}'")
    for i, label in enumerate(value):
        if not isinstance(label, (int, float)) or not 0.0 <= label <= 1.0:  # NaN fails the range test too
            raise DataError(f"{source}: '{key}[{i}]' must be a number in [0, 1], got {_short(label)}")
    return [float(label) for label in value]


def load_step_labels(files: list[str | Path], prompt_key: str = "prompt", steps_key: str = "steps",
                     labels_key: str = "hard_labels") -> list[StepRow]:
    """Step-labelled responses (a process reward model's data), validated: a prompt (string or messages), the
    steps (a non-empty list of non-empty strings) and as many labels, each a number in [0, 1]."""
    keys = (prompt_key, steps_key, labels_key)
    out: list[StepRow] = []
    for source, row in _located_rows(files):
        row = _object(row, source, f"'{prompt_key}', '{steps_key}' and '{labels_key}'")
        prompt = _text_or_messages(field_value(row, prompt_key), source, prompt_key)
        steps = _steps(field_value(row, steps_key), source, steps_key)
        labels = _labels(field_value(row, labels_key), source, labels_key, len(steps), steps_key)
        out.append(StepRow(len(out), prompt, steps, labels, source=source, metadata=_metadata(row, keys)))
    return out


def split_conversation(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    """``(prompt, response)``: the messages before the first assistant turn, and from it to the last assistant turn.

    Messages after the last assistant turn are dropped: nothing in them is trained,
    and a causal loss never looks ahead. Raises ``ChatError`` when there is no
    assistant turn, or nothing before the first one.
    """
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not replies:
        raise ChatError("has no assistant message to learn from")
    if replies[0] == 0:
        raise ChatError("starts with an assistant message; the first reply needs a message (a user turn) before it")
    return messages[: replies[0]], messages[replies[0]: replies[-1] + 1]


def load_sft(files: list[str | Path], data_cfg) -> list[SFTRow]:
    """Supervised examples: conversations (``data_cfg.messages_key``) or prompt/response pairs, validated.

    A row with ``messages_key`` is conversational and split by ``split_conversation``
    (every assistant turn is trained, messages after the last one are dropped);
    otherwise it needs ``prompt_key`` (a string or messages) and ``response_key`` (a
    string, or messages starting and ending with an assistant turn). ``answer`` is
    ``answer_key``'s value as a string when the row has it, else None.
    ``data_cfg`` is a ``rlcore.config.DataConfig``.
    """
    dc = data_cfg
    out: list[SFTRow] = []
    for source, row in _located_rows(files):
        row = _object(row, source, f"'{dc.messages_key}' or '{dc.prompt_key}' and '{dc.response_key}'")
        conversation = field_value(row, dc.messages_key)
        if conversation is not None:
            if not isinstance(conversation, (list, tuple)) or not conversation:
                raise DataError(f"{source}: expected a list of {{role, content}} messages in '{dc.messages_key}', "
                                f"got {_short(conversation)}")
            messages = _text_or_messages(conversation, source, dc.messages_key)
            try:
                prompt, response = split_conversation(messages)
            except ChatError as exc:
                raise DataError(f"{source}: '{dc.messages_key}' {exc}") from None
            keys: tuple[str, ...] = (dc.messages_key, dc.answer_key)
        elif field_value(row, dc.prompt_key) is not None:
            prompt = _text_or_messages(field_value(row, dc.prompt_key), source, dc.prompt_key)
            response = _reply(field_value(row, dc.response_key), source, dc.response_key, dc.prompt_key)
            keys = (dc.prompt_key, dc.response_key, dc.answer_key)
        else:
            raise DataError(f"{source}: expected '{dc.messages_key}' (a conversation) or '{dc.prompt_key}' and "
                            f"'{dc.response_key}', got fields {_short(sorted(row))}")
        raw = field_value(row, dc.answer_key)
        answer = None if raw is None else _answer(raw, source, dc.answer_key)
        out.append(SFTRow(len(out), prompt, response, answer, source=source, metadata=_metadata(row, keys)))
    return out


def render_prompts(rows: list, tokenizer, system_prompt: str | None = None, tools: list[dict] | None = None) -> list:
    """Each ``PromptRow`` with its prompt rendered (``rlcore.chat.render_prompt``) and ``templated`` set; others as is.

    Message lists get the tokenizer's chat template and generation prompt, and
    ``system_prompt`` when they have no system message; a string prompt stays as
    it is unless there is a system prompt to add, or ``tools`` (JSON schemas,
    listed by the template) to show. A rendered row keeps what the user wrote in
    ``user_prompt``, and with ``tools`` (even none) its messages. Raises ``DataError`` naming the row.
    """
    out = []
    for row in rows:
        if isinstance(row, PromptRow):
            try:
                text, templated = render_prompt(row.prompt, tokenizer, system_prompt, tools)
            except ChatError as exc:
                raise DataError(f"{row.source}: {exc}") from None
            if templated:  # the user's words are kept for the rewards (PromptRow.user_text)
                messages = prompt_messages(row.prompt, system_prompt, tools) if tools is not None else None
                row = dataclasses.replace(row, prompt=text, templated=True, user_prompt=row.user_text(),
                                          messages=messages)
        out.append(row)
    return out


def _prompt_ids(row, tokenizer) -> list[int]:
    if isinstance(row.prompt, str):
        return encode_prompt(row.prompt, getattr(row, "templated", False), tokenizer)
    try:  # a message list not rendered by render_prompts (preference and SFT rows): count it as templated
        text, templated = render_prompt(row.prompt, tokenizer)
    except ChatError as exc:
        raise DataError(f"{row.source}: {exc}") from None
    return encode_prompt(text, templated, tokenizer)


def check_prompt_lengths(rows: list, tokenizer, max_tokens: int, context: tuple[int, str] | None = None) -> None:
    """Fail on the first prompt longer than ``max_tokens`` tokens, or filling ``context`` (its length in tokens and
    what sets it: vLLM refuses a prompt that leaves no room for a response), naming its file and row.

    Templated prompts are counted as the rollout worker encodes them (no special
    tokens added); a message list not yet rendered is counted with the chat
    template (without ``data.system_prompt``).
    """
    for row in rows:
        count = len(_prompt_ids(row, tokenizer))
        if count > max_tokens:
            raise DataError(f"{row.source}: prompt has {count} tokens, more than data.max_prompt_tokens={max_tokens}")
        if context is not None and count >= context[0]:
            raise DataError(f"{row.source}: prompt has {count} tokens, all of {context[1]}: no room is left for a "
                            "response (vLLM refuses it); shorten the prompt or drop the row")


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
