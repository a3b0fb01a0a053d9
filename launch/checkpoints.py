"""Checkpoints: ``checkpoints/step_N/<group>/`` per learner group, then ``trainer_state.json``.

The state file is written last, and atomically (written aside, then renamed):
it is the mark of a complete save, however the save was cut short. It lists
every file of the checkpoint with its size, so a checkpoint damaged afterwards
(a shard deleted or truncated) is found before anything is loaded from it.
Resuming takes the newest checkpoint that checks out, saying in one line why
each newer one was passed over. A save keeps the newest ``keep`` complete
checkpoints and removes the damaged ones older than itself.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

STATE_FILE = "trainer_state.json"
FILES = "files"
"""The state file's key for ``{relative path: size in bytes}`` of the checkpoint's other files."""


def write_json(path: Path, value: dict) -> None:
    """Written aside, then renamed into place: a reader never sees half a file, a write cut short leaves none."""
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    scratch.write_text(json.dumps(value))
    os.replace(scratch, path)


def manifest(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` but the state file, with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != STATE_FILE}


def damage(folder: Path) -> str | None:
    """Why the checkpoint in ``folder`` cannot be used (one phrase), or None when it is complete."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE} (its save did not finish)"
    except (OSError, ValueError):
        return f"{STATE_FILE} is not readable JSON"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{STATE_FILE} has no step"
    for name, size in state.get(FILES, {}).items():  # a checkpoint saved before the list existed is taken on trust
        try:
            found = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if found != size:
            return f"{name} has {found} bytes, {size} were saved"
    return None


class CheckpointError(RuntimeError):
    """Checkpoint folders exist but none can be resumed from; the message says why for each."""


class Checkpoints:
    def __init__(self, root: Path, groups: dict, keep: int, fatal: tuple[type[BaseException], ...] = ()):
        """``fatal``: errors of ``load_checkpoint`` that are not the checkpoint's fault (a learner rank died),
        raised as they are instead of passing over the checkpoint."""
        self.root, self.groups, self.keep, self.fatal = root, groups, keep, fatal

    def save(self, step: int, state: dict) -> None:
        path = self.root / f"step_{step:06d}"
        if path.exists():
            shutil.rmtree(path)
        for name, group in self.groups.items():
            group.save_checkpoint(str(path / name))
        # Last: a save cut short leaves no state file.
        write_json(path / STATE_FILE, {"step": step, **state, FILES: manifest(path)})
        complete = self.completed()
        for old in complete[: -self.keep] + [p for p in self.folders() if p < path and p not in complete]:
            shutil.rmtree(old)  # the oldest complete ones, and damaged ones this save supersedes

    def folders(self) -> list[Path]:
        """Every ``step_N`` folder, oldest first, complete or not."""
        return sorted(p for p in self.root.glob("step_*") if p.is_dir())

    def completed(self) -> list[Path]:
        """Checkpoint folders that check out (``damage`` finds nothing), oldest first."""
        return [p for p in self.folders() if damage(p) is None]

    def check(self) -> None:
        """Before anything starts: ``CheckpointError`` when there are checkpoint folders but none checks out."""
        found = self.folders()
        if found and not self.completed():
            raise CheckpointError(f"no complete checkpoint in {self.root}: " + "; ".join(
                f"{p.name}: {damage(p)}" for p in reversed(found)))

    def restore(self) -> tuple[Path, dict] | None:
        """Load the newest checkpoint that checks out and loads into the groups; its folder and state (without the
        file list), or None if there is no checkpoint folder. Each newer one passed over gets one line saying why;
        ``CheckpointError`` when none is left."""
        reasons = []
        for path in reversed(self.folders()):
            reason = damage(path) or self._load(path)
            if reason is None:
                state = json.loads((path / STATE_FILE).read_text())
                state.pop(FILES, None)
                return path, state
            print(f"checkpoint {path} is damaged, passed over: {reason}", flush=True)
            reasons.append(f"{path.name}: {reason}")
        if reasons:
            raise CheckpointError(f"no complete checkpoint in {self.root}: {'; '.join(reasons)}")
        return None

    def _load(self, path: Path) -> str | None:
        """Load ``path`` into every group; None, or why it failed (a file damaged in a way its size does not show)."""
        try:
            for name, group in self.groups.items():
                group.load_checkpoint(str(path / name))
        except self.fatal:
            raise
        except Exception as exc:
            return f"loading it failed: {_one_line(exc)}"
        return None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
