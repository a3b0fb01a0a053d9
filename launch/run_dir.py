"""One driver per output folder, and no earlier result written over by accident.

Every command that writes into ``trainer.output_dir`` (``launch.train``,
``launch.evaluate``, ``launch.label_steps``) claims the folder before Ray
starts:

* **The lock.** ``driver.lock`` in the folder, held with ``flock`` for as long as
  the driver runs, and holding its pid, host and command. A second driver is
  refused with one line naming them. The kernel drops the lock when the process
  ends however it ends, so a run that died leaves nothing that blocks the next
  one. ``launch.scale`` asks the same lock whether a job is running there.
  (Over NFS, ``flock`` holds only where the file system supports it.)
* **Earlier results.** A folder holding a command's results (``Outputs.results``)
  is refused unless the run continues them (``trainer.resume=true``, training
  only) or replaces them (``trainer.overwrite=true``, which first deletes every
  file the command writes there).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rlcore.config import Config, ConfigError

LOCK = "driver.lock"


@dataclass(frozen=True)
class Outputs:
    """What a command writes into its output folder."""

    command: str
    """The command, as a user types it: ``launch.train``."""
    results: tuple[str, ...]
    """Names whose presence means the folder holds this command's results from an earlier run."""
    also: tuple[str, ...] = ()
    """Other names it writes (deleted by ``trainer.overwrite`` too, but no sign of an earlier run alone)."""
    resumable: bool = False
    """Whether ``trainer.resume=true`` continues the results in place."""


TRAIN = Outputs("launch.train", ("metrics.jsonl", "rollouts.jsonl", "checkpoints", "final"),
                also=("config.yaml", "tensorboard", "wandb", "curves.png", "scale_request.json", "scale_reply.json"),
                resumable=True)
# config.yaml alone is what a run that failed while its roles started leaves: no result, so not a used folder.


class RunDir:
    """An output folder claimed by this process (``claim``): the lock is held until ``release``."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Give the folder up. The lock file stays (removing it would let two drivers lock two different files)."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def lock(path: Path, command: str) -> RunDir:
    """Lock ``path`` (created if missing) for this driver; ``ConfigError`` when another driver holds it."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"trainer.output_dir={path} is in use by another driver ({describe(holder(path))}); "
                          "wait for it to end or choose another trainer.output_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return RunDir(path, fd)


def holder(path: Path) -> dict | None:
    """The driver holding ``path``'s lock (``{"pid", "host", "command", "since"}``), or None when none runs."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: read who holds it
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except json.JSONDecodeError:  # caught between its truncate and its write
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(driver: dict | None) -> str:
    if not driver:
        return "a driver"
    return (f"{driver.get('command', 'a driver')} pid {driver.get('pid', '?')} on {driver.get('host', '?')}, "
            f"since {driver.get('since', '?')}")


def claim(cfg: Config, outputs: Outputs) -> RunDir:
    """Lock ``trainer.output_dir`` for ``outputs.command`` and make sure no earlier result there is mixed up or
    lost: refuse one (``ConfigError``), continue it (``trainer.resume``) or delete it (``trainer.overwrite``)."""
    tc = cfg.trainer
    if tc.resume and tc.overwrite:
        raise ConfigError("trainer.resume=true and trainer.overwrite=true: continue the run in trainer.output_dir "
                          "or replace it, not both")
    path = Path(tc.output_dir).expanduser().resolve()
    run_dir = lock(path, outputs.command)
    earlier = [name for name in outputs.results if used(path / name)]
    if not earlier or (tc.resume and outputs.resumable):
        return run_dir
    if not tc.overwrite:
        run_dir.release()
        resume = "continue it with trainer.resume=true, " if outputs.resumable else ""
        raise ConfigError(f"trainer.output_dir={path} already holds the results of an earlier {outputs.command} "
                          f"({', '.join(earlier)}): {resume}choose a new trainer.output_dir, or delete them and "
                          "start afresh with trainer.overwrite=true")
    for name in outputs.results + outputs.also:
        remove(path / name)
    print(f"trainer.overwrite=true: deleted the earlier results in {path} ({', '.join(earlier)})", flush=True)
    return run_dir


def used(path: Path) -> bool:
    """A file, or a folder with something in it."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
