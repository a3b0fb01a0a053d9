"""Shared fixtures: the locally built model and data, and the session's Ray cluster on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """``ray start --head`` on 127.0.0.1 in a process session of its own, with the dashboard (``ray job submit`` needs
    it) and free ports, so that a test's own Ray (a run's local one, ``tests/test_cluster_e2e.py``'s nodes) can run
    beside it. ``stop`` kills the session: the head's processes and every worker its raylet started."""

    def __init__(self):
        from tests.test_e2e import venv_env  # this venv's tools first: a job's `python -m launch.train` is its python

        self.port, dashboard, client, agent = (free_port() for _ in range(4))
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{dashboard}"
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port",
             str(self.port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
             "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent), "--num-cpus", "2",
             "--disable-usage-stats"],
            env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        _, stderr = self.proc.communicate(timeout=180)
        if self.proc.returncode:
            self.stop()
            raise RuntimeError(f"ray start --head failed: {stderr[-2000:]}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        forget_cluster(self.port)


def forget_cluster(port: int | str) -> None:
    """`ray start` recorded its cluster as the machine's current one; `ray stop` would forget it, a kill does not:
    the record is removed if it names ``port``."""
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().strip().endswith(f":{port}"):
        current.unlink()


@pytest.fixture(scope="session")
def ray_head():
    """The test session's one Ray cluster. Each module that uses Ray joins it as a driver of its own (``local_ray``)
    instead of starting and stopping a local Ray (4-5 s), and so do its command-line runs where it shares
    (``shared_ray``). Started when the first module needs it, killed after the last test."""
    head = RayHead()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def local_ray(ray_head):
    """This process as a Ray driver of the session's cluster for the module's tests: the actors it starts end with
    the module (``ray.shutdown`` ends its job; those that hold a model are killed first, ``end_models``)."""
    # Ray 2.60 turns token authentication on for new clusters: the test runs that join this one go without.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(address=ray_head.address)
    yield ray
    from actors.groups import end_models

    end_models()
    ray.shutdown()


@pytest.fixture(scope="module")
def shared_ray(ray_head):
    """The module's command-line runs join the session's Ray instead of each starting and stopping one of its own:
    seconds less per run. Each run still starts all its roles in processes of their own; starting a local Ray is
    what the other modules' runs exercise."""
    with sharing(ray_head.address):
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
