"""Checkpoints: ``checkpoints/step_N/<group>/`` per learner group, then ``trainer_state.json``.

The state file is written last, and atomically (written aside, then renamed),
so a folder without it is incomplete and ignored on resume, however the save
was cut short. The newest ``keep`` complete checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

STATE_FILE = "trainer_state.json"


def write_json(path: Path, value: dict) -> None:
    """Written aside, then renamed into place: a reader never sees half a file, a write cut short leaves none."""
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    scratch.write_text(json.dumps(value))
    os.replace(scratch, path)


class Checkpoints:
    def __init__(self, root: Path, groups: dict, keep: int):
        self.root, self.groups, self.keep = root, groups, keep

    def save(self, step: int, state: dict) -> None:
        path = self.root / f"step_{step:06d}"
        if path.exists():
            shutil.rmtree(path)
        for name, group in self.groups.items():
            group.save_checkpoint(str(path / name))
        write_json(path / STATE_FILE, {"step": step, **state})  # a save cut short leaves no state file
        for old in self.completed()[: -self.keep]:
            shutil.rmtree(old)

    def completed(self) -> list[Path]:
        """Checkpoint folders with a state file, oldest first."""
        return sorted(p.parent for p in self.root.glob(f"step_*/{STATE_FILE}"))

    def restore(self) -> tuple[Path, dict] | None:
        """Load the newest complete checkpoint into the groups; its folder and state, or None if there is none."""
        found = self.completed()
        if not found:
            return None
        for name, group in self.groups.items():
            group.load_checkpoint(str(found[-1] / name))
        return found[-1], json.loads((found[-1] / STATE_FILE).read_text())
