"""The driver's collect/learn split (rollout.max_staleness), with in-process fakes for the roles.

The fakes keep the timing real (threads, sleeps) and record what happened when:
which policy version generated each batch, when each weight sync landed.
The real roles run in tests/test_e2e.py.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
import torch

import launch.trainer as trainer_module
from actors.groups import LearnerDied
from launch.build import configure
from launch.collector import staleness
from launch.sources import Collected
from launch.trainer import Trainer, TrainingError
from rlcore.batch import RolloutBatch

PROMPTS, N, WIDTH = 4, 2, 3


class Events:
    """What the fakes saw, in order, across threads."""

    def __init__(self):
        self.lock, self.log = threading.Lock(), []

    def add(self, *event):
        with self.lock:
            self.log.append(event)


class FakeSource:
    """Stands in for the rollout source: batches tagged with the version the (fake) rollout workers hold."""

    events: Events | None = None
    delays: tuple[float, float] = (0.0, 0.0)

    def __init__(self, cfg, algorithm, roles, rows, eval_rows):
        self.version, self.ready = 0, []
        self.rng = random.Random(0)

    def collect(self, step):
        self.events.add("collect_start", step, self.version, threading.current_thread() is threading.main_thread())
        time.sleep(self.rng.uniform(*self.delays))
        size = PROMPTS * N
        batch = RolloutBatch(
            prompt_ids=[[1, 2]] * size, response_ids=[[3] * WIDTH] * size, response_mask=torch.ones(size, WIDTH),
            group_ids=torch.arange(PROMPTS).repeat_interleave(N), prompt_index=torch.arange(size),
            rollout_logprobs=torch.full((size, WIDTH), -1.0), policy_version=torch.full((size,), self.version),
            prompts=["p"] * size, responses=["r"] * size, answers=["a"] * size,
            scores=torch.arange(size, dtype=torch.float32) % N)
        self.events.add("collect_end", step, self.version)
        return Collected(batch, {"time/rollout": 0.0})

    def sync(self, actor, version):
        time.sleep(0.002)
        self.version = version
        self.events.add("sync", version)

    def evaluate(self):
        return {}


class FakeLearnerGroup:
    delays: tuple[float, float] = (0.0, 0.0)
    deaths: list[int] = []
    """Steps at whose update a rank dies (each once)."""

    def __init__(self, cfg, algorithm, name, spec, model_cls, place=None, reference_path=None):
        self.name, self.spec, self.ready = name, spec, []
        self.rng = random.Random(1)
        self.restarts = 0

    def restart(self):
        self.restarts += 1
        FakeSource.events.add("restart", self.name)

    def forward(self, shipment, output):
        return torch.full_like(shipment.batch.response_mask, -1.0)

    def train_step(self, shipment, step, state):
        if step in self.deaths:
            self.deaths.remove(step)
            raise LearnerDied(self.name, [1], RuntimeError("killed"))
        time.sleep(self.rng.uniform(*self.delays))
        return {f"{self.name}/loss": float(step)}

    def state_dict_ref(self):
        return None

    def save_checkpoint(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)

    def load_checkpoint(self, path):
        return None


class FakeReference:
    def __init__(self, cfg, path, place=None):
        self.ready, self.faults = [], {"restarts": 0}

    def logprobs(self, shipment):
        return torch.full_like(shipment.batch.response_mask, -1.0)


FakeLearnerGroup.reference_logprobs = FakeReference.logprobs  # reference.host=policy: the policy's ranks answer


class FakeShipment:
    def __init__(self, batch):
        self.batch = batch


@pytest.fixture
def fakes(monkeypatch):
    for name, fake in (("LearnerGroup", FakeLearnerGroup), ("ReferenceGroup", FakeReference),
                       ("Shipment", FakeShipment)):
        monkeypatch.setattr(trainer_module, name, fake)
    monkeypatch.setattr(trainer_module, "wait_ready", lambda groups: None)
    events = Events()
    monkeypatch.setattr(FakeSource, "events", events)
    return events


def run(tmp_path, *overrides, resume=False):
    plan = configure(None, [f"trainer.output_dir={tmp_path}", f"data.prompts_per_step={PROMPTS}", f"rollout.n={N}",
                            f"learner.mini_batch_size={PROMPTS * N}", "trainer.eval_every=0", "trainer.export=false",
                            "trainer.loggers=[jsonl]", f"trainer.resume={str(resume).lower()}", *overrides])
    plan.source = FakeSource
    trainer = Trainer(plan, data=type("Data", (), {"train": [], "eval": []})())
    trainer.fit()
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_no_staleness_takes_turns_in_the_callers_thread(fakes, tmp_path):
    metrics = run(tmp_path, "trainer.total_steps=4", "rollout.max_staleness=0")
    # collect 1, update, sync 1, collect 2, ...: every batch from the weights of the step before, in the main thread.
    expected = []
    for step in range(1, 5):
        expected += [("collect_start", step, step - 1, True), ("collect_end", step, step - 1), ("sync", step)]
    assert fakes.log == expected
    assert [m["staleness/max"] for m in metrics] == [0.0] * 4
    assert [m["policy_version"] for m in metrics] == [1, 2, 3, 4]


@pytest.mark.parametrize("bound", [1, 2])
def test_pipelined_samples_are_never_more_than_max_staleness_behind(fakes, tmp_path, monkeypatch, bound):
    monkeypatch.setattr(FakeSource, "delays", (0.0, 0.03))
    monkeypatch.setattr(FakeLearnerGroup, "delays", (0.0, 0.03))
    metrics = run(tmp_path, "trainer.total_steps=10", f"rollout.max_staleness={bound}")
    assert [m["step"] for m in metrics] == list(range(1, 11))
    assert max(m["staleness/max"] for m in metrics) <= bound
    starts = {e[1]: e for e in fakes.log if e[0] == "collect_start"}
    synced = [e[1] for e in fakes.log if e[0] == "sync"]
    for step, (_, _, version, in_main) in starts.items():
        assert not in_main  # collected in the collect thread
        assert version >= step - 1 - bound  # the bound, from the generating side
    # The pipeline really overlaps: the batch of step s + 1 started before the weights of update s were synced.
    order = [(e[0], e[1]) for e in fakes.log]
    assert any(order.index(("collect_start", s + 1)) < order.index(("sync", s)) for s in synced[:-1])


def test_resume_with_a_pipeline_continues_the_step_counter_and_the_bound(fakes, tmp_path):
    run(tmp_path, "trainer.total_steps=4", "trainer.save_every=2", "rollout.max_staleness=1")
    fakes.log.clear()
    metrics = run(tmp_path, "trainer.total_steps=6", "trainer.save_every=2", "rollout.max_staleness=1", resume=True)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # appended: 5 and 6 after the first run's 1-4
    assert [m["policy_version"] for m in metrics[4:]] == [5, 6]
    assert fakes.log[0] == ("sync", 4)  # the restored weights reach the rollout workers before any collection
    assert all(m["staleness/max"] <= 1 for m in metrics[4:])


def test_a_sample_over_the_bound_is_never_trained_on():
    versions = torch.tensor([3, 3, 1, 3])
    assert staleness(versions, policy_version=3, bound=2, step=4) == {
        "staleness/mean": 0.5, "staleness/max": 2.0, "staleness/min": 0.0}
    with pytest.raises(RuntimeError, match="step 4: a sample is 2 policy versions old, over rollout.max_staleness=1"):
        staleness(versions, policy_version=3, bound=1, step=4)
    assert staleness(None, policy_version=3, bound=0, step=4) == {}  # preference pairs carry no version


def test_a_dead_learner_rank_restarts_from_the_newest_checkpoint_and_redoes_the_steps_after_it(fakes, tmp_path,
                                                                                                 monkeypatch, capsys):
    monkeypatch.setattr(FakeLearnerGroup, "deaths", [6])
    metrics = run(tmp_path, "trainer.total_steps=8", "trainer.save_every=4", "rollout.max_staleness=1")
    # steps 5 and 6's first try are lost with the rank; 5 is redone from the step-4 checkpoint, then 6 ...
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 5, 6, 7, 8]
    final = {m["step"]: m for m in metrics}
    assert [final[s]["policy_version"] for s in range(1, 9)] == list(range(1, 9))
    assert final[4]["faults/actor/restarts"] == 0 and final[8]["faults/actor/restarts"] == 1
    restart = fakes.log.index(("restart", "actor"))
    assert fakes.log[restart + 1] == ("sync", 4)  # the checkpoint's weights reach the rollout workers first
    assert all(m["staleness/max"] <= 1 for m in metrics)
    assert (f"step 6: learner group 'actor' lost rank 1 (RuntimeError); restarted it (1 of trainer.max_restarts=2) "
            f"from {tmp_path / 'checkpoints' / 'step_000004'}: redoing steps 5..6") in capsys.readouterr().out


def test_without_a_checkpoint_every_group_starts_afresh(fakes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(FakeLearnerGroup, "deaths", [2])
    metrics = run(tmp_path, "trainer.total_steps=3", "trainer.save_every=0")
    assert [m["step"] for m in metrics] == [1, 1, 2, 3]
    assert [m["policy_version"] for m in metrics] == [1, 1, 2, 3]
    assert fakes.log[fakes.log.index(("restart", "actor")) + 1] == ("sync", 0)  # the initial weights
    assert "from the initial weights: redoing steps 1..2" in capsys.readouterr().out


def test_past_max_restarts_the_run_stops_with_one_line(fakes, tmp_path, monkeypatch):
    monkeypatch.setattr(FakeLearnerGroup, "deaths", [2, 3])
    with pytest.raises(TrainingError) as stop:
        run(tmp_path, "trainer.total_steps=4", "trainer.save_every=1", "trainer.max_restarts=1")
    assert str(stop.value) == (f"step 3: learner group 'actor' lost rank 1 (RuntimeError), after 1 restarts "
                               f"(trainer.max_restarts=1); resume from the newest checkpoint in "
                               f"{tmp_path / 'checkpoints'} with trainer.resume=true")


def test_on_shared_gpus_the_vllm_engines_are_ready_before_the_learners_start(fakes, monkeypatch, tmp_path):
    """vLLM refuses to start unless rollout.gpu_memory_utilization of its GPU is free: where the roles share the
    GPUs, the source (its engines) starts and is waited for before the learner groups and the reference start."""
    order = []
    monkeypatch.setattr(trainer_module, "placement", lambda cfg, groups: type("Shared", (), {"shares_gpus": True})())
    monkeypatch.setattr(trainer_module, "wait_ready", lambda groups: order.append(("ready", len(groups))))
    monkeypatch.setattr(FakeSource, "__init__", lambda self, *a: order.append("source"))
    monkeypatch.setattr(FakeLearnerGroup, "__init__", lambda self, *a: order.append("learner"))
    monkeypatch.setattr(FakeReference, "__init__", lambda self, *a: order.append("reference"))
    plan = configure(None, [f"trainer.output_dir={tmp_path}", "trainer.loggers=[jsonl]", "reference.host=own"])
    plan.source = FakeSource
    Trainer(plan, data=type("Data", (), {"train": [], "eval": []})())
    assert order == ["source", ("ready", 1), "learner", "reference", ("ready", 3)]
    order.clear()
    monkeypatch.setattr(trainer_module, "placement", lambda cfg, groups: type("Own", (), {"shares_gpus": False})())
    Trainer(plan, data=type("Data", (), {"train": [], "eval": []})())
    assert order == ["learner", "reference", "source", ("ready", 3)]  # elsewhere all at once


@pytest.mark.parametrize("host", ["auto", "own"])
def test_on_cpu_the_reference_is_inside_the_policy_ranks_unless_asked_for_its_own_actor(fakes, monkeypatch, tmp_path,
                                                                                       host):
    from actors.groups import ReferenceInPolicy

    paths = {}
    real_init = FakeLearnerGroup.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        paths[self.name] = args[6] if len(args) > 6 else kwargs.get("reference_path")

    monkeypatch.setattr(FakeLearnerGroup, "__init__", init)
    plan = configure(None, [f"trainer.output_dir={tmp_path}", "trainer.loggers=[jsonl]", f"reference.host={host}",
                            "algorithm.name=ppo"])
    plan.source = FakeSource
    trainer = Trainer(plan, data=type("Data", (), {"train": [], "eval": []})())
    if host == "auto":  # the policy's ranks hold the frozen copy, the critic's do not
        assert isinstance(trainer.reference, ReferenceInPolicy) and trainer.reference.policy is trainer.learners["actor"]
        assert paths == {"actor": plan.cfg.model.path, "critic": None}
    else:
        assert isinstance(trainer.reference, FakeReference) and paths == {"actor": None, "critic": None}
