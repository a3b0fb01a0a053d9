"""Shared fixtures: the locally built model and data, and a local Ray on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = os.environ.get("RLCORE_TEST_CACHE", str(Path("~/.cache/rlcore").expanduser()))
SHARED_RAY = "RLCORE_TEST_RAY_ADDRESS"
"""Set while a module's command-line runs share one Ray cluster: ``tests.test_e2e.venv_env`` passes it on to them as
``RAY_ADDRESS``."""


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
    # Ray 2.60 turns token authentication on for new clusters: the test runs that join this one go without.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from launch.train import ACTOR_ENV

    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shared_ray(local_ray):
    """The module's command-line runs join its local Ray instead of each starting and stopping one of its own:
    seconds less per run. Each run still starts all its roles in processes of their own; starting a local Ray is
    what the other modules' runs exercise."""
    with sharing(local_ray.get_runtime_context().gcs_address):
        yield


@contextmanager
def sharing(address: str):
    """Command-line runs started meanwhile (``venv_env``) join the Ray cluster at ``address``."""
    os.environ[SHARED_RAY] = address
    try:
        yield
    finally:
        os.environ.pop(SHARED_RAY, None)


def pytest_collection_finish(session):
    """Start the package-index resolve of the gpu install when its test is selected: it waits on the network for
    about 30 s, which the other tests' CPU work then covers (``tests.test_install.Resolve``)."""
    if any(item.name == "test_the_gpu_install_resolves_to_the_pinned_vllm_and_the_torch_it_pins"
           for item in session.items):
        from tests.test_install import GPU_RESOLVE

        GPU_RESOLVE.start()


def pytest_sessionfinish(session):
    if "tests.test_install" in sys.modules:
        from tests.test_install import GPU_RESOLVE

        GPU_RESOLVE.close()
