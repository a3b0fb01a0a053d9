"""The roles as real Ray actors on a local cluster: vLLM rollout, FSDP learners (world size 2), weight sync."""

import pytest
import torch

from launch.build import configure
from rlcore.data import load_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def groups(local_ray, local_model, arithmetic_files):
    from actors.groups import LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup, wait_ready

    # world_size 2: a real 2-rank gloo group with FSDP2 sharding.
    plan = configure(None, [f"model.path={local_model}", "learner.world_size=2", "learner.lr=1e-3",
                            "data.prompts_per_step=8", "rollout.n=4", "learner.mini_batch_size=32",
                            "rollout.max_new_tokens=6"])
    cfg, actor = plan.cfg, plan.learners["actor"]
    # each rank also hosts a frozen reference (reference.host=policy), beside the reference's own actor
    learners = LearnerGroup(cfg, plan.algorithm, "actor", actor.spec, actor.model, reference_path=local_model)
    rollout = RolloutGroup(cfg, local_model)
    rewards = RewardGroup(plan.reward_terms)
    reference = ReferenceGroup(cfg, local_model)
    wait_ready([learners, rollout, rewards, reference])  # all four start at once
    rows = load_prompts([arithmetic_files[0]])[:8]
    yield plan, learners, rollout, rewards, reference, rows
    learners.shutdown()


def test_rollout_generates_n_samples_per_prompt(groups):
    _, _, rollout, rewards, _, rows = groups
    batch = rollout.generate(rows, n=4, seed=7)
    assert len(batch) == 32
    assert batch.group_ids.tolist() == [g for g in range(8) for _ in range(4)]
    assert batch.prompt_index.tolist() == [r.index for r in rows for _ in range(4)]
    assert batch.prompts[:4] == [rows[0].prompt] * 4
    assert (batch.rollout_logprobs <= 0).all() and batch.response_mask.sum(-1).min() >= 1
    assert rollout.generate(rows, n=4, seed=7).response_ids == batch.response_ids  # seeded: repeatable
    rewards.score(batch)
    assert batch.scores.shape == (32,) and set(batch.reward_terms) == {"exact_match"}
    expected = [float(r.strip() == a) for r, a in zip(batch.responses, batch.answers)]
    assert batch.reward_terms["exact_match"].tolist() == expected


def test_shipment_puts_each_field_once(groups):
    from actors.groups import Shipment

    _, _, rollout, _, _, rows = groups
    batch = rollout.generate(rows, n=2, seed=1)
    shipment = Shipment(batch)
    names, refs = shipment.slices(("prompt_ids", "response_ids", "response_mask", "advantages"), 2)
    assert names == ["prompt_ids", "response_ids", "response_mask"]  # unset fields do not travel
    again_names, again = shipment.slices(("response_mask", "prompt_ids"), 2)
    assert again[0][0] is refs[0][2] and again[1][1] is refs[1][0]  # the same objects, not put again
    batch.response_mask = batch.response_mask.clone()  # a replaced field is put again on its next use
    assert shipment.slices(("response_mask",), 2)[1][0][0] is not refs[0][2]


def test_reference_matches_vllm_before_training(groups):
    from actors.groups import Shipment

    _, _, rollout, _, reference, rows = groups
    batch = rollout.generate(rows, n=2)
    ref = reference.logprobs(Shipment(batch))
    mask = batch.response_mask.bool()
    assert (ref[mask] - batch.rollout_logprobs[mask]).abs().max() < 1e-4


def test_train_sync_then_vllm_logprobs_match_learner(groups):
    """One optimizer step on 2 FSDP ranks, a weight sync, then vLLM samples under the new weights:
    vLLM's sampling log-probs must equal the learner's log-probs of the same tokens (fp32, 1e-4)."""
    from actors.groups import Shipment

    plan, learners, rollout, rewards, reference, rows = groups
    batch = rollout.generate(rows, n=4, seed=3)
    assert batch.policy_version.unique().tolist() == [0]
    rewards.score(batch)
    shipment = Shipment(batch)
    batch.ref_logprobs = reference.logprobs(shipment)
    batch.old_logprobs = learners.forward(shipment, "logprobs")
    plan.algorithm.compute_advantages(batch)
    batch.advantages = batch.advantages + torch.linspace(-1, 1, len(batch))  # a non-zero update for sure
    metrics = learners.train_step(shipment, step=1, state={})
    assert metrics["actor/grad_norm"] > 0 and metrics["throughput/actor_tokens_per_s"] > 0

    rollout.update_weights(learners.state_dict_ref(), version=1)
    fresh = rollout.generate(rows, n=4, seed=4)
    assert fresh.policy_version.unique().tolist() == [1]
    # The learner's own log-probs of vLLM's tokens, computed on both ranks (each takes a half).
    learner_lp = learners.forward(Shipment(fresh), "logprobs")
    mask = fresh.response_mask.bool()
    diff = (learner_lp[mask] - fresh.rollout_logprobs[mask]).abs().max().item()
    assert diff < 1e-4, f"vLLM and learner log-probs differ by {diff}"
    # And the weights really changed: the reference (initial policy) now disagrees.
    ref = reference.logprobs(Shipment(fresh))
    assert (ref[mask] - fresh.rollout_logprobs[mask]).abs().max().item() > 1e-3


def test_the_reference_inside_the_policy_ranks_stays_the_frozen_initial_policy(groups):
    """reference.host=policy: each learner rank scores its half with its own frozen copy; after the update above
    the copies still give the reference actor's log-probs, not the trained policy's."""
    from actors.groups import ReferenceInPolicy, Shipment

    _, learners, rollout, _, reference, rows = groups
    batch = rollout.generate(rows, n=4, seed=5)
    shipment = Shipment(batch)
    inside, own = ReferenceInPolicy(learners).logprobs(shipment), reference.logprobs(shipment)
    mask = batch.response_mask.bool()
    assert inside.shape == own.shape and (inside[~mask] == 0).all()
    assert (inside[mask] - own[mask]).abs().max().item() < 1e-5
    policy = learners.forward(shipment, "logprobs")
    assert (inside[mask] - policy[mask]).abs().max().item() > 1e-3


def test_roles_use_the_cores_ray_would_not_give_them(groups):
    """Ray gives an actor with num_cpus=0.25 one torch thread; the rollout worker, the reference and the learner ranks
    set their own. vLLM keeps torch's count only when OMP_NUM_THREADS says so, which the rollout worker sets too."""
    import os

    import ray

    _, learners, rollout, _, reference, _ = groups
    cores = os.cpu_count()
    threads = lambda self: (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"])  # noqa: E731
    assert ray.get(rollout.workers[0].__ray_call__.remote(threads)) == (cores, str(cores))
    assert ray.get(reference.worker.__ray_call__.remote(lambda self: torch.get_num_threads())) == cores
    ranks = ray.get([r.__ray_call__.remote(lambda self: torch.get_num_threads()) for r in learners.ranks])
    assert ranks == [max(1, cores // 2)] * 2  # world_size 2 on this machine share its cores


def process_state(_role) -> dict:
    """In an actor's process: the variables its role runs with, and how much of a freed 256 MiB buffer stays
    resident."""
    import os

    def resident() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    buffer = bytearray(256 << 20)  # malloc'd and written: resident
    del buffer
    return {"env": {name: os.environ.get(name) for name in ("VLLM_LOGGING_LEVEL", "PYTHONWARNINGS",
                                                            "MALLOC_TRIM_THRESHOLD_")},
            "kept": resident() - before}


def test_every_role_runs_quiet_and_keeps_freed_memory(groups):
    """No job-level runtime_env: ``actors.process`` sets each role's process up as its package is imported, before
    the role's own imports. A freed 256 MiB buffer stays in the process (glibc would give it back: mmap'd), which is
    what spares the learner the page faults beside a vLLM engine."""
    import ray

    from actors.process import ALLOCATOR, QUIET_ENV

    _, learners, rollout, rewards, reference, _ = groups
    actors = [*learners.ranks, rollout.workers[0], reference.worker, rewards.pools[0].workers[0]]
    for state in ray.get([actor.__ray_call__.remote(process_state) for actor in actors]):
        assert state["env"] == {"VLLM_LOGGING_LEVEL": QUIET_ENV["VLLM_LOGGING_LEVEL"],
                                "PYTHONWARNINGS": QUIET_ENV["PYTHONWARNINGS"],
                                "MALLOC_TRIM_THRESHOLD_": str(ALLOCATOR["MALLOC_TRIM_THRESHOLD_"][1])}
        assert state["kept"] > 200 << 20, state


def test_a_driver_that_imports_the_roles_keeps_its_own_settings():
    """Outside a Ray worker (a driver, a test, torchrun) importing ``actors`` changes nothing."""
    import os

    import actors.process

    before = dict(os.environ)
    actors.process.settle_ray_worker()
    assert not actors.process.in_ray_worker() and dict(os.environ) == before


def test_settle_keeps_what_the_environment_already_says():
    from actors.process import ALLOCATOR, QUIET_ENV, settle

    mine = {"TRANSFORMERS_VERBOSITY": "info", "PYTHONWARNINGS": "default", **{name: "0" for name in ALLOCATOR}}
    environ = dict(mine)  # every allocator variable given: this process's malloc is left alone
    settle(environ)
    assert environ == {**QUIET_ENV, **mine}


def test_the_rollout_worker_compiles_nothing_on_cpu_in_eager_mode(groups):
    """vLLM's sampler wraps its rank count in torch.compile even with enforce_eager; on CPU the worker turns dynamo
    off so that the first step does not build it (2.2 s), and its samples are what eager computes."""
    import ray

    _, _, rollout, _, _, _ = groups
    assert ray.get(rollout.workers[0].__ray_call__.remote(lambda self: torch._dynamo.config.disable)) is True
