"""What every role's process runs with: quiet libraries, and a malloc that keeps the memory of freed tensors.

``settle_ray_worker`` sets them up when the ``actors`` package is first imported in a Ray worker, that is before
any role's module imports torch, transformers or vLLM. Before, the driver passed them as a job-level
``runtime_env``: Ray then prepared that environment for every worker it started, and a run's roles were ready
0.7-0.9 s later on the 2-core machine (BENCHMARKS.md, "Roles without a runtime_env"). A value already in the
process's environment wins. Imports nothing heavy: it runs first.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

QUIET_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::UserWarning",
}
"""Keeps the per-step lines readable among the workers' logs; the processes a role starts inherit them."""

ALLOCATOR = {  # glibc's variable: (its mallopt parameter, the value)
    "MALLOC_TRIM_THRESHOLD_": (-1, 64 << 30),
    "MALLOC_TOP_PAD_": (-2, 1 << 30),
    "MALLOC_MMAP_THRESHOLD_": (-3, 4 << 30),
}
"""glibc malloc keeps the memory of freed tensors in the process instead of handing it back to the system and
faulting it in again on the next step: with a vLLM engine resident in another process, those page faults made the
learner's update 15-20% slower (BENCHMARKS.md, "The allocator"). The running process gets them through ``mallopt``,
which takes a C int: the two thresholds are 2 GiB - 1 in it, their full values in the processes it starts."""

_INT_MAX = 2**31 - 1


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (an actor's or a task's), not a driver. Imports nothing."""
    ray = sys.modules.get("ray")
    return ray is not None and ray._private.worker.global_worker.mode == ray.WORKER_MODE


def settle(environ=os.environ) -> None:
    """Quiet libraries and the allocator's settings for this process and the ones it starts; a value already in
    ``environ`` wins (Python and glibc read their own variables when the process started)."""
    if "PYTHONWARNINGS" not in environ:
        for category in (FutureWarning, UserWarning):  # as QUIET_ENV's PYTHONWARNINGS says for a new process
            warnings.filterwarnings("ignore", category=category)
    for name, value in QUIET_ENV.items():
        environ.setdefault(name, value)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; absent on macOS
    for name, (param, value) in ALLOCATOR.items():
        if name not in environ:
            environ[name] = str(value)
            if mallopt is not None:
                mallopt(param, min(value, _INT_MAX))


def settle_ray_worker() -> None:
    """``settle``, in a Ray worker only (the package's import runs it once per process): a driver or a test that
    imports ``actors`` keeps its own settings."""
    if in_ray_worker():
        settle()
