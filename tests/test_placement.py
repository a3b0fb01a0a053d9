"""trainer.placement: the colocated placement's logic on CPU (its GPU parts, vLLM's sleep mode and CUDA IPC, need a
GPU; these tests run their logic with fakes where a GPU would be, and the weight source on a real FSDP2 learner)."""

import pytest
import torch

from actors.learner import LearnerRank, free_address
from actors.placement import Colocated, Separate, bundles, placement
from actors.rollout import MULTI_TURN_CPU_BLOCK, RolloutWorker, engine_options
from launch.build import configure
from rlcore.config import ConfigError

COLOCATED = ["trainer.placement=colocated", "learner.world_size=2", "rollout.num_workers=2",
             "learner.mini_batch_size=16", "data.prompts_per_step=2"]


def test_bundles_put_a_rank_of_each_group_a_rollout_worker_and_the_reference_on_each_gpu():
    plan = configure(None, [*COLOCATED, "algorithm.name=ppo", "algorithm.critic.world_size=1",
                            "algorithm.critic.mini_batch_size=16", "rollout.num_cpus=1", "learner.num_cpus=0.5",
                            "algorithm.critic.num_cpus=0.25", "reference.num_cpus=0.125"])
    groups = {name: g.spec.settings for name, g in plan.learners.items()}
    specs, share = bundles(plan.cfg, groups)
    # bundle 0: policy rank 0, critic rank 0, rollout worker 0, the reference; bundle 1: policy rank 1, worker 1
    assert specs == [{"GPU": 1.0, "CPU": 1.875}, {"GPU": 1.0, "CPU": 1.5}]
    assert share == 0.25  # four actors share bundle 0's GPU
    no_ref = configure(None, [*COLOCATED, "reference.enabled=false", "algorithm.kl_coef=0"]).cfg
    assert bundles(no_ref, {"actor": no_ref.learner})[1] == 0.5
    assert bundles(configure(None, COLOCATED).cfg, {"actor": no_ref.learner})[1] == 0.3333  # Ray's 1e-4 grid


@pytest.mark.parametrize("overrides, message", [
    (["trainer.placement=shared"], "trainer.placement='shared' is not one of separate, colocated"),
    (["trainer.placement=colocated", "learner.world_size=2", "learner.mini_batch_size=16"],
     "set rollout.num_workers=2 (learner.world_size), not 1"),
    ([*COLOCATED, "rollout.max_staleness=1"], "set rollout.max_staleness=0, not 1"),
    ([*COLOCATED, "learner.lora_rank=8"], "cannot merge a LoRA adapter on the way yet"),
    ([*COLOCATED, "algorithm.name=ppo", "algorithm.critic.world_size=4", "algorithm.critic.mini_batch_size=16"],
     "algorithm.critic.world_size=4 must be at most learner.world_size=2"),
    ([*COLOCATED, "algorithm.name=sft", "reference.enabled=false", "learner.mini_batch_size=2"], "uses 'sft': use trainer.placement=separate"),
    ([*COLOCATED, "reference.host=policy"], "set reference.host=own (or auto)"),
    (["reference.host=learner"], "reference.host='learner' is not one of auto, own, policy"),
])
def test_colocation_needs_one_worker_per_rank_no_staleness_and_the_rollout_source(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        configure(None, overrides)


@pytest.mark.parametrize("overrides, inside", [
    ([], True),  # auto, CPU learners
    (["learner.num_gpus=1"], False),  # auto, GPU learners
    (COLOCATED, False),  # auto, colocated on GPUs
    (["reference.host=own"], False),
    (["learner.num_gpus=1", "reference.host=policy"], True),
    (["reference.host=policy", "reference.enabled=false", "algorithm.kl_coef=0"], False),  # no reference at all
])
def test_the_reference_runs_inside_the_policy_ranks_by_default_on_cpu(overrides, inside):
    from rlcore.config import reference_in_policy

    assert reference_in_policy(configure(None, overrides).cfg) is inside


def test_a_cluster_without_gpus_refuses_colocation_in_one_line(monkeypatch):
    import ray

    cfg = configure(None, COLOCATED).cfg
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"needs 2 GPUs \(one per learner rank, learner.world_size=2\); this Ray "
                                          r"cluster has 0: use trainer.placement=separate"):
        placement(cfg, {"actor": cfg.learner})
    assert isinstance(placement(configure(None, []).cfg, {}), Separate)


def test_colocated_actors_go_to_their_rank_bundle_with_a_share_of_its_gpu():
    place = Colocated(group=None, share=0.3333, count=2)
    for role, index, bundle in [("learner", 1, 1), ("rollout", 0, 0), ("rollout", 3, 1), ("reference", 0, 0)]:
        options = place.options(role, index)
        assert options["num_gpus"] == 0.3333
        assert options["scheduling_strategy"].placement_group_bundle_index == bundle
    assert Separate().options("rollout", 0) == {}


class Calls:
    """A fake rollout group and learner group that record what the placement asks of them, in order."""

    def __init__(self):
        self.log = []

    def sleep(self):
        self.log.append("sleep")

    def wake(self, tags=None):
        self.log.append(f"wake {tags}")

    def members(self):
        return ["w0", "w1"]

    def send_weights(self, workers, version):
        self.log.append(f"send {workers} v{version}")

    def state_dict_ref(self):
        self.log.append("gather")
        return "ref"

    def update_weights(self, ref, version):
        self.log.append(f"load {ref} v{version}")


def test_colocated_sleeps_after_rollout_and_wakes_weights_before_the_transfer_then_the_rest():
    calls = Calls()
    place = Colocated(group=None, share=0.5, count=2)
    place.rest(calls)
    place.push(calls, calls, 3)
    assert calls.log == ["sleep", "wake ['weights']", "send ['w0', 'w1'] v3", "wake None"]
    calls = Calls()
    Separate().rest(calls)
    Separate().push(calls, calls, 3)
    assert calls.log == ["gather", "load ref v3"]  # through the object store, vLLM never sleeps


class FakeLLM:
    def __init__(self):
        self.log = []

    def sleep(self, level):
        self.log.append(f"sleep {level}")

    def wake_up(self, tags):
        self.log.append(f"wake_up {tags}")
        return tags is None  # fully awake only once everything is back

    def collective_rpc(self, method, args=()):
        self.log.append(f"{method} {args}")


def test_rollout_worker_sleeps_and_wakes_only_when_asleep_and_tags_the_transferred_weights():
    worker = RolloutWorker.__new__(RolloutWorker)  # its engine replaced by a fake: no GPU here
    worker.llm, worker.asleep, worker.version = FakeLLM(), False, 0
    worker.wake()  # awake: nothing to do (a resumed run's first sync)
    worker.sleep()
    worker.wake(["weights"])
    assert worker.asleep  # the KV cache is still asleep
    worker.start_weight_update()
    worker.receive_weights({"names": ["w"]})
    worker.finish_weight_update(5)
    worker.wake()
    worker.wake()
    assert not worker.asleep and worker.version == 5
    assert worker.llm.log == ["sleep 1", "wake_up ['weights']", "start_weight_update ()",
                              "update_weights ({'names': ['w']},)", "finish_weight_update ()", "wake_up None"]


def test_engine_options_turn_on_sleep_mode_and_the_ipc_transfer_only_when_colocated():
    rc = configure(None, []).cfg.rollout
    assert engine_options(rc, cuda=False, colocated=False) == {}
    assert engine_options(rc, cuda=True, colocated=False) == {"gpu_memory_utilization": rc.gpu_memory_utilization}
    assert engine_options(rc, cuda=True, colocated=True) == {
        "gpu_memory_utilization": rc.gpu_memory_utilization, "enable_sleep_mode": True,
        "sleep_mode_offload_cudagraph": True, "weight_transfer_config": {"backend": "ipc"}}


def test_multi_turn_episodes_on_cpu_get_small_kv_blocks_unless_the_config_names_a_size():
    rc = configure(None, []).cfg.rollout
    assert engine_options(rc, cuda=False, colocated=False, episodes=True) == {"block_size": MULTI_TURN_CPU_BLOCK}
    assert "block_size" not in engine_options(rc, cuda=True, colocated=False, episodes=True)  # the GPU's 16 is small
    named = configure(None, ["rollout.kv_block_size=64"]).cfg.rollout
    assert engine_options(named, cuda=False, colocated=False, episodes=True) == {"block_size": 64}
    assert engine_options(named, cuda=True, colocated=False)["block_size"] == 64


def test_rollout_client_reaches_every_worker_and_tags_the_version(monkeypatch):
    import ray

    from actors.weight_transfer import RolloutClient

    log = []

    class Method:
        def __init__(self, worker, name):
            self.worker, self.name = worker, name

        def remote(self, *args):
            log.append((self.worker, self.name, args))
            return None

    class Worker:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, method):
            return Method(self.name, method)

    monkeypatch.setattr(ray, "get", lambda refs: refs)
    client = RolloutClient([Worker("w0"), Worker("w1")], version=7)
    client.init_weight_transfer_engine({"packed": True})
    client.update_weights({"names": ["a"]})
    client.finish_weight_update()
    assert log == [("w0", "init_weight_transfer", ({"packed": True},)), ("w1", "init_weight_transfer", ({"packed": True},)),
                   ("w0", "receive_weights", ({"names": ["a"]},)), ("w1", "receive_weights", ({"names": ["a"]},)),
                   ("w0", "finish_weight_update", (7,)), ("w1", "finish_weight_update", (7,))]


def test_the_weight_source_streams_the_learners_full_weights_under_hf_names_in_the_rollout_dtype(local_model):
    """What the IPC engine sends: every parameter gathered whole from the FSDP2 shards, cast to model.dtype, named
    as the Hugging Face checkpoint vLLM loads; the metadata agrees with the stream element by element."""
    from actors.weight_transfer import LearnerWeights

    plan = configure(None, [f"model.path={local_model}", "learner.mini_batch_size=8", "data.prompts_per_step=1"])
    group = plan.learners["actor"]
    learner = LearnerRank(plan.cfg, plan.algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    try:
        full = learner.full_state_dict()
        source = LearnerWeights(learner.model, torch.bfloat16)
        stream = list(source)
        assert [(m.name, m.dtype, m.shape) for m in source.parameter_metadata()] == [  # vLLM 0.32 and 0.33 alike
            (name, t.dtype, tuple(t.shape)) for name, t in stream]
        assert {name for name, _ in stream} <= set(full) and "model.layers.0.self_attn.q_proj.weight" in dict(stream)
        for name, tensor in stream:
            assert tensor.dtype == torch.bfloat16 and not hasattr(tensor, "full_tensor")
            assert torch.equal(tensor, full[name].to(torch.bfloat16)), name
    finally:
        learner.shutdown()
