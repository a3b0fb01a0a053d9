"""Shared fixtures: the locally built model and data, and a local Ray on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = os.environ.get("RLCORE_TEST_CACHE", str(Path("~/.cache/rlcore").expanduser()))


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return CACHE_DIR


@pytest.fixture(scope="session")
def local_model(cache_dir) -> str:
    """The warm-started tiny Qwen2 model (built once, then cached on disk)."""
    from rlcore.assets import resolve

    return resolve("local://tiny-qwen2-arith", cache_dir, "model.path")


@pytest.fixture(scope="session")
def arithmetic_files(cache_dir) -> tuple[str, str]:
    from rlcore.assets import resolve

    return (resolve("local://arithmetic-train.jsonl", cache_dir, "data.train_files"),
            resolve("local://arithmetic-test.jsonl", cache_dir, "data.eval_files"))


@pytest.fixture(scope="module")
def local_ray():
    """A Ray cluster of this process on loopback, stopped after the module's tests."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported
    import ray

    from launch.train import ACTOR_ENV

    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    yield ray
    ray.shutdown()
