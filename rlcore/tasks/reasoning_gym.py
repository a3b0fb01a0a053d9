"""reasoning-gym's procedural tasks as data files: ``reasoning_gym://NAME?size=N&seed=S&...``.

`reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ (an optional
extra: ``pip install -e .[reasoning-gym]``) generates about a hundred kinds of
reasoning problems, each dataset with its own verifier, ``score_answer(answer,
entry)``. A ``data.train_files`` / ``data.eval_files`` entry such as::

    reasoning_gym://chain_sum?size=2000&seed=1&min_terms=3&max_terms=4&max_digits=1

is written once into the cache (``trainer.cache_dir/reasoning_gym/``) as a JSONL
file whose rows carry their entry, so that the ``reasoning_gym`` reward term
(``rewards.reasoning_gym``) scores each sample with its own dataset's verifier:

* ``prompt``: one user message, the entry's question followed by R1's format
  instruction (``INSTRUCTION``); ``format=plain`` leaves the question as it is;
* ``answer``: the entry's reference answer (what ``answer_match``-style terms and
  majority voting compare);
* ``data_source``: ``reasoning_gym/NAME`` (verl's column);
* ``reasoning_gym``: ``{"dataset": NAME, "entry": {...}}``, the whole entry.

Query parameters: ``size`` and ``seed`` (reasoning-gym's own, defaults 500 and
0), ``format`` (``r1`` or ``plain``), ``rows`` (``rl``: prompts, the default;
``sft``: cold-start conversations with worked solutions, for the datasets in
``SOLVERS``), ``slip`` (with ``rows=sft``: the probability of the worked
solutions' one systematic mistake, an imperfect teacher; default 0), and every other one is a field of the dataset's config class,
parsed as JSON when it parses (``3``, ``true``, ``[1, 2]``) and as text otherwise.
A wrong name or value stops the run with one line naming it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable
from hashlib import sha256
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from rlcore.tasks.arithmetic import write_jsonl

SCHEME = "reasoning_gym://"
INSTRUCTION = "Think in <think> </think>, answer in <answer> </answer>."
"""Appended to each question (``format=r1``): the reasoning task's instruction (``rlcore.tasks.reasoning``)."""
FORMATS = ("r1", "plain")
ROWS = ("rl", "sft")
INSTALL = "pip install -e '.[reasoning-gym]'"


class ReasoningGymError(ValueError):
    """A ``reasoning_gym://`` address that cannot be built: one line naming the config key and what is wrong."""


def _value(text: str) -> Any:
    """A query value: JSON when it parses (numbers, booleans, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse(uri: str, what: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """``(dataset, dataset_config, options)`` of a ``reasoning_gym://`` address: the dataset's name, the keyword
    arguments of ``reasoning_gym.create_dataset`` (``size``, ``seed`` and config fields) and this module's own
    ``format`` and ``rows``. ``what`` names the config key in errors."""
    name, _, query = uri[len(SCHEME):].partition("?")  # by hand: urllib takes no "_" in a scheme
    name = name.strip("/")
    if not name:
        raise ReasoningGymError(f"{what}: {uri} names no dataset; e.g. {SCHEME}chain_sum?size=1000&seed=1")
    config: dict[str, Any] = {"size": 500, "seed": 0}
    options = {"format": "r1", "rows": "rl", "slip": "0"}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ReasoningGymError(f"{what}: {uri}: the query is not key=value&key=value ({exc})") from exc
    for key, text in pairs:
        if key in options:
            options[key] = text
        else:
            config[key] = _value(text)
    for key, allowed in (("format", FORMATS), ("rows", ROWS)):
        if options[key] not in allowed:
            raise ReasoningGymError(f"{what}: {uri}: {key}={options[key]} is not one of {', '.join(allowed)}")
    try:
        slip = float(options["slip"])
    except ValueError:
        slip = -1.0
    if not 0.0 <= slip <= 1.0:
        raise ReasoningGymError(f"{what}: {uri}: slip={options['slip']} is not a probability in [0, 1]")
    if slip and options["rows"] != "sft":
        raise ReasoningGymError(f"{what}: {uri}: slip={options['slip']} makes the worked solutions' teacher "
                                "imperfect: it needs rows=sft")
    if options["rows"] == "sft" and name not in SOLVERS:
        raise ReasoningGymError(f"{what}: {uri}: rows=sft needs worked solutions, written here for "
                                f"{', '.join(sorted(SOLVERS))} only; give your own SFT file for {name}")
    return name, config, options


def create_dataset(name: str, config: dict[str, Any], what: str):
    """``reasoning_gym.create_dataset(name, **config)``, with a one-line error for a missing extra, an unknown
    dataset or a bad config field."""
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ReasoningGymError(f"{what}: {SCHEME}{name} needs the reasoning-gym extra ({INSTALL})") from exc
    known = reasoning_gym.factory.DATASETS
    if name not in known:
        close = [n for n in sorted(known) if name in n or n in name][:5]
        raise ReasoningGymError(f"{what}: reasoning-gym has no dataset {name!r}"
                                + (f" (did you mean {', '.join(close)}?)" if close else f"; {len(known)} exist, "
                                   "listed by reasoning_gym.factory.DATASETS"))
    fields = {f.name for f in dataclasses.fields(known[name][1])}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ReasoningGymError(f"{what}: {SCHEME}{name} has no parameter {unknown[0]!r}; its config takes "
                                f"{', '.join(sorted(fields))}, and format, rows")
    try:
        return reasoning_gym.create_dataset(name, **config)
    except (TypeError, ValueError, AssertionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ReasoningGymError(f"{what}: {SCHEME}{name} with {config}: {message}") from exc


def json_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as JSON stores it (tuples become lists, anything else unusual its text), so a row holds it."""
    return json.loads(json.dumps(entry, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))


def question(entry: dict[str, Any], fmt: str) -> str:
    """The user message: the entry's question, with R1's format instruction unless ``fmt`` is ``plain``."""
    return entry["question"] if fmt == "plain" else f"{entry['question']} {INSTRUCTION}"


def rows(name: str, dataset, options: dict[str, str]) -> list[dict[str, Any]]:
    """The dataset's entries as rows (see the module docstring); SFT rows add the worked solution."""
    out = []
    for raw in dataset:
        entry = json_entry(raw)
        user = {"role": "user", "content": question(entry, options["format"])}
        row = {"answer": str(entry["answer"]), "data_source": f"reasoning_gym/{name}",
               "reasoning_gym": {"dataset": name, "entry": entry}}
        if options["rows"] == "sft":
            row["messages"] = [user, {"role": "assistant", "content": SOLVERS[name](entry, float(options["slip"]))}]
        else:
            row["prompt"] = [user]
        out.append(row)
    return out


def build(uri: str, cache_dir: str | Path, what: str) -> str:
    """The JSONL file of a ``reasoning_gym://`` address, generated on first use and cached under a name derived
    from the whole address and reasoning-gym's version (a changed parameter or release writes a new file), and for
    SFT rows ``SOLUTIONS_VERSION``."""
    name, config, options = parse(uri, what)
    try:
        release = version("reasoning-gym")  # the package's metadata: a cached file needs no import of it
    except PackageNotFoundError:
        release = "absent"  # no such file is cached: create_dataset names the missing extra
    key = f"{release} {name} {sorted(config.items())} {sorted(options.items())}"
    if options["rows"] == "sft":
        key += f" solutions v{SOLUTIONS_VERSION}"  # a changed worked solution writes a new file
    digest = sha256(key.encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser().resolve() / "reasoning_gym" / f"{name}-{digest}.jsonl"
    if not path.exists():  # checks the extra, the name and the config, then draws the entries
        write_jsonl(rows(name, create_dataset(name, config, what), options), path)
    return str(path)


# Worked solutions (cold-start SFT traces) for datasets whose answers a short scratchpad derives.

_TERM = re.compile(r"\s*([+-])\s*(\d+)")


def chain_sum_solution(entry: dict[str, Any], slip: float = 0.0) -> str:
    """``chain_sum``'s worked solution, left to right, one operation per step::

        4 - 1 - 7  ->  <think>4-1=3. 3-7=-4.</think><answer>-4</answer>

    ``slip`` > 0 makes an imperfect teacher: where a step's result is negative while the total before it was
    not, it drops the minus sign with that probability (``3-7=4.``) and goes on from the wrong total, so the
    answer is wrong too. The draw is seeded by the expression: the same entry always gets the same solution.
    """
    expression = entry["metadata"]["expression"].strip()
    first = re.match(r"-?\d+", expression)
    total, steps, slipped = int(first.group()), [], False
    rng = random.Random(expression)
    for op, digits in _TERM.findall(expression[first.end():]):
        new = total + int(digits) if op == "+" else total - int(digits)
        if slip and new < 0 <= total and rng.random() < slip:
            new, slipped = -new, True
        steps.append(f"{total}{op}{digits}={new}.")
        total = new
    if not slipped and str(total) != str(entry["answer"]):
        raise ReasoningGymError(f"chain_sum: the worked solution of {expression!r} gives {total}, "
                                f"the entry says {entry['answer']}")
    return f"<think>{' '.join(steps)}</think><answer>{total}</answer>"


SOLUTIONS_VERSION = 1
"""Raised with every change to what ``SOLVERS`` write: part of an SFT file's cache key."""
SOLVERS: dict[str, Callable[[dict[str, Any], float], str]] = {"chain_sum": chain_sum_solution}
"""Datasets whose ``rows=sft`` rows this module can write: name -> the entry's whole assistant response (given the
``slip`` option, an imperfect teacher's mistake rate)."""
