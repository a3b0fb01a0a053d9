"""A real Ray cluster of several nodes on 127.0.0.1: rollout workers pinned to other nodes than the learners, a node
that joins mid-run and gets workers through ``launch.scale``, the pool shrunk again, and a node that dies mid-run.

Every node is ``ray start --block`` in a session of its own, so the test finds each node's worker processes (they
are its raylet's children) and stops exactly the nodes it started.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import forget_cluster, free_port
from tests.test_e2e import PRESET, REPO, SMALL, read_jsonl, venv_env
from tests.test_resilience_e2e import scale
from tests.zygote import python

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def cluster_env() -> dict[str, str]:
    """The venv's environment for a node or a driver of a cluster of several nodes: without Ray's single-machine
    switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which a local Ray started from this test process would set),
    under which other nodes cannot join."""
    env = venv_env()
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    return env


class Node:
    """One Ray node on this machine, ``ray start --block`` in its own session."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([RAY, "start", "--block", "--node-ip-address", "127.0.0.1",
                                      "--object-store-memory", str(200 << 20), "--disable-usage-stats", *args],
                                     env=cluster_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def processes(self, role: str) -> list[int]:
        found = subprocess.run(["pgrep", "-f", f"ray::{role}", "-s", str(self.proc.pid)], capture_output=True,
                               text=True)
        return [int(p) for p in found.stdout.split()]

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)
            try:
                self.proc.wait(timeout=5)  # a head node may take longer: the kill below ends it
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # what the session left behind (its raylet's workers)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def worker_node(head: Node, rollout_slots: int) -> Node:
    """A node joining ``head``'s cluster with no CPUs for other roles and room for ``rollout_slots`` rollout workers
    (the custom resource ``rollout_node``)."""
    return Node("--address", head.address, "--num-cpus", "0", "--resources", json.dumps({"rollout_node": rollout_slots}))


@pytest.fixture(scope="module")
def head():
    """The head node: the driver, the learners, the reference and the reward workers run here."""
    port = free_port()
    # a lost node is noticed after 3 missed health checks 1 s apart, instead of Ray's 5 checks 3 s apart
    node = Node("--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                "--system-config", json.dumps({"health_check_period_ms": 1000, "health_check_failure_threshold": 3}))
    node.address = f"127.0.0.1:{port}"
    try:
        yield node
    finally:
        node.stop(signal.SIGKILL)  # nothing to wait for: the test is over
        forget_cluster(port)


def wait_for(predicate, what: str, timeout_s: float = 180, log: Path | None = None,
             proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    tail = (lambda: log.read_text()[-3000:]) if log is not None else (lambda: "")
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended while waiting for {what}: {tail()}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {tail()}")


def test_rollout_workers_on_other_nodes_grow_shrink_and_survive_a_lost_node(head, tmp_path):
    second = worker_node(head, 1)
    third = None
    out, log = tmp_path / "run", tmp_path / "run.log"  # a file, not a pipe nobody reads until the end
    # enough left after the node's loss for Ray to notice it and the pool to give the worker up: here the node is
    # killed at step 5-13 (when the third node has registered) and its loss handled 6 steps later
    steps = 32
    proc = subprocess.Popen([python(), "-m", "launch.train", "--config", PRESET, *SMALL,
                             f"trainer.total_steps={steps}", "trainer.save_every=0", "trainer.export=false",
                             f"trainer.output_dir={out}", f"ray.address={head.address}", "rollout.num_cpus=0",
                             "rollout.resources={rollout_node: 1}"],
                            cwd=REPO, env=cluster_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    try:
        # The third node joins once the run has placed its one rollout worker (on the second node), and registers
        # while the run's roles start: it is up by step 2, so few steps go by before the pool grows onto it.
        wait_for(lambda: second.processes("RolloutWorker"), "the rollout worker's process", log=log, proc=proc)
        third = worker_node(head, 2)  # joins mid-run with room for two more
        wait_for(lambda: len(read_jsonl(out / "metrics.jsonl")) >= 2 if (out / "metrics.jsonl").exists() else 0,
                 "two steps", log=log, proc=proc)
        # the one rollout worker runs on the second node: the learner's weights reach it across nodes
        assert len(second.processes("RolloutWorker")) == 1 and not head.processes("RolloutWorker")
        assert not third.processes("RolloutWorker")
        grown = scale(out, 3)
        assert len(third.processes("RolloutWorker")) == 2, grown
        scale(out, 2)  # one of the third node's workers leaves once its work is done
        wait_for(lambda: len(third.processes("RolloutWorker")) == 1, "the leaving worker to end", 60)
        logged = len(read_jsonl(out / "metrics.jsonl"))
        assert logged < steps // 2, f"the run got to step {logged} of {steps} before the node left: raise its steps"
        third.stop(signal.SIGKILL)  # the node dies with its worker
        proc.wait(timeout=600)
        stdout = log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        second.stop()
        if third is not None:
            third.stop()
    assert proc.returncode == 0, stdout[-3000:]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))  # every step once
    assert [m["policy_version"] for m in metrics] == list(range(1, steps + 1))  # each trained once
    sizes = [int(m["rollout/num_workers"]) for m in metrics]
    assert [n for i, n in enumerate(sizes) if i == 0 or n != sizes[i - 1]] == [1, 3, 2, 1], sizes
    assert metrics[-1]["faults/rollout/lost"] == 1, metrics[-1]
    assert "no node has the resources for another rollout worker" in stdout
    # every worker sampled with the learner's current weights: its log-probs match the learner's
    assert max(m["actor/rollout_gap/abs_diff_mean"] for m in metrics) < 1e-3
