"""End to end: the real command line, real Ray, real vLLM engines, real FSDP learners."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SHARED_RAY, sharing
from tests.zygote import python

# The session's Ray cluster (with the dashboard `ray job submit` needs): every run of the module joins it.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

REPO = Path(__file__).resolve().parents[1]
PRESET = "launch/configs/grpo_arithmetic.yaml"
SMALL = ["data.prompts_per_step=16", "rollout.n=4", "learner.mini_batch_size=32", "trainer.eval_every=0"]


def venv_env() -> dict[str, str]:
    """The environment of a command-line run: this venv's tools first, and the module's shared Ray cluster, if it
    has one (``tests.conftest.shared_ray``), as ``RAY_ADDRESS``; without one the run starts a Ray of its own."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env.pop("RAY_ADDRESS", None)
    if SHARED_RAY in env:
        env["RAY_ADDRESS"] = env.pop(SHARED_RAY)
    # Ray 2.60 turns token authentication on for new clusters; a loopback test cluster goes without.
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def launch(out: Path, *overrides: str, preset: str = PRESET) -> subprocess.CompletedProcess:
    return subprocess.run([python(), "-m", "launch.train", "--config", preset, f"trainer.output_dir={out}",
                           *SMALL, *overrides], cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=600)


def train(out: Path, *overrides: str, preset: str = PRESET) -> subprocess.CompletedProcess:
    proc = launch(out, *overrides, preset=preset)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    """The split run's newest checkpoint (step 3) is cut short on disk: the resume passes over it, with one line,
    to step 2, redoes step 3 and ends as the uninterrupted run did."""
    full, split = tmp_path / "full", tmp_path / "split"
    train(full, "trainer.total_steps=4", "trainer.save_every=2", "trainer.export=false")
    train(split, "trainer.total_steps=3", "trainer.save_every=2", "trainer.export=false")  # saves steps 2 and 3
    shard = next((split / "checkpoints" / "step_000003" / "actor").glob("*.distcp"))
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: size // 2])
    resumed = train(split, "trainer.total_steps=4", "trainer.save_every=2", "trainer.export=false", "trainer.resume=true")
    assert (f"checkpoint {split / 'checkpoints' / 'step_000003'} is damaged, passed over: actor/{shard.name} has "
            f"{size // 2} bytes, {size} were saved\nresumed from {split / 'checkpoints' / 'step_000002'} at step 2"
            in resumed.stdout), resumed.stdout[-3000:]

    full_metrics = {r["step"]: r for r in read_jsonl(full / "metrics.jsonl")}
    split_metrics = read_jsonl(split / "metrics.jsonl")
    assert [r["step"] for r in split_metrics] == [1, 2, 3, 4]  # no step repeated or skipped
    assert [r["policy_version"] for r in split_metrics] == [1, 2, 3, 4]
    # The steps after the resume sample, score and update exactly as the uninterrupted run did: same weights and
    # optimizer state, same prompts, same sampling seeds, same mini-batch shuffle.
    for record in split_metrics[2:]:
        expected = full_metrics[record["step"]]
        for key in ("reward/mean", "response_length/mean", "actor/pg_loss", "actor/grad_norm", "actor/kl",
                    "actor/entropy"):
            assert record[key] == pytest.approx(expected[key], rel=1e-3, abs=1e-5), (record["step"], key)
    assert full_metrics[3]["actor/grad_norm"] != full_metrics[1]["actor/grad_norm"]  # the steps really differ
    full_order = [r["prompt_indices"] for r in read_jsonl(full / "rollouts.jsonl")]
    split_order = [r["prompt_indices"] for r in read_jsonl(split / "rollouts.jsonl")]
    assert split_order == full_order
    assert len({tuple(o) for o in full_order}) == 4  # each step really drew different prompts
    # keep_checkpoints=2: the step-2 and step-4 checkpoints remain; the step-4 save removed the damaged one.
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step_000002", "step_000004"]

    # The same command again, without trainer.resume: refused in one line before Ray starts, nothing touched.
    before = {p: p.read_bytes() for p in full.rglob("*") if p.is_file() and p.name != "driver.lock"}
    again = launch(full, "trainer.total_steps=4", "trainer.save_every=2", "trainer.export=false")
    assert again.returncode == 2 and again.stderr.splitlines() == [
        f"config error: trainer.output_dir={full} already holds the results of an earlier launch.train "
        "(metrics.jsonl, rollouts.jsonl, checkpoints): continue it with trainer.resume=true, choose a new "
        "trainer.output_dir, or delete them and start afresh with trainer.overwrite=true"], again.stderr[-3000:]
    assert {p: p.read_bytes() for p in full.rglob("*") if p.is_file() and p.name != "driver.lock"} == before
    # Every checkpoint damaged: a resume is refused in one line, before Ray starts.
    for metadata in (full / "checkpoints").glob("step_*/actor/.metadata"):
        metadata.unlink()
    refused = launch(full, "trainer.total_steps=6", "trainer.export=false", "trainer.resume=true")
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"input error: trainer.resume=true: no complete checkpoint in {full / 'checkpoints'}: step_000004: "
        "actor/.metadata is missing; step_000002: actor/.metadata is missing; start afresh with "
        "trainer.overwrite=true"], refused.stderr[-3000:]


def test_pipelined_run_keeps_the_staleness_bound_and_resumes(tmp_path):
    out = tmp_path / "k1"
    common = ("rollout.max_staleness=1", "trainer.save_every=2", "trainer.export=false")
    train(out, "trainer.total_steps=2", *common)
    resumed = train(out, "trainer.total_steps=4", "trainer.resume=true", *common)
    assert f"resumed from {out / 'checkpoints' / 'step_000002'} at step 2" in resumed.stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2, 3, 4] and [r["policy_version"] for r in metrics] == [1, 2, 3, 4]
    # Steps 1 and 3 train on samples of the weights they start from; 2 and 4 on samples one update old,
    # generated while the learners updated (a resume restarts the pipeline from the checkpoint's weights).
    assert [r["staleness/max"] for r in metrics] == [0.0, 1.0, 0.0, 1.0]
    for r in metrics:  # old log-probs recomputed, token-level truncated IS against the sampler's
        assert 0 < r["actor/is/mean_weight"] <= 2.0 and 0 <= r["actor/is/clipped_frac"] <= 1
    # The learner's log-probs before its update match vLLM's on fresh samples, and drift on stale ones.
    assert metrics[0]["actor/rollout_gap/abs_diff_mean"] < 1e-3
    assert metrics[1]["actor/rollout_gap/abs_diff_mean"] > 10 * metrics[0]["actor/rollout_gap/abs_diff_mean"]


def _wait_for_dashboard(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers, if only to say who may ask
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray dashboard at {url} did not come up in {timeout}s")


@pytest.fixture(scope="module")
def ray_cluster(ray_head):
    """The session's Ray cluster (``tests.conftest.ray_head``, with the dashboard ``ray job submit`` talks to): the
    module's runs join it (``sharing``)."""
    _wait_for_dashboard(ray_head.dashboard)
    with sharing(ray_head.address):
        yield shutil.which("ray", path=venv_env()["PATH"]), ray_head.dashboard, venv_env()


USER_TERM = "examples.my_rewards:CloseEnough"
"""A reward class from the repository's ``examples`` folder, which is not installed: the job's working dir ships it."""


@pytest.fixture(scope="module")
def job(ray_cluster, tmp_path_factory) -> tuple[str, Path]:
    """The README's ``ray job submit --working-dir . -- python -m launch.train ...``, with a user's reward term
    beside the preset's: its log and output folder, for the two tests below."""
    ray, url, env = ray_cluster
    out = tmp_path_factory.mktemp("job") / "run"
    proc = subprocess.run(
        [ray, "job", "submit", "--address", url, "--working-dir", ".", "--",
         "python", "-m", "launch.train", "--config", PRESET, f"trainer.output_dir={out}", *SMALL,
         "trainer.total_steps=3", "trainer.save_every=0",
         f"reward.terms=[{{name: exact_match}}, {{name: '{USER_TERM}', weight: 0.5, num_workers: 2, "
         "args: {tolerance: 2}}]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in log, log[-4000:]
    return log, out


def test_ray_job_submit_trains_and_exports(ray_cluster, job):
    log, out = job
    assert "step [####################] 3/3" in log  # the per-step lines reach the job's log

    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in ("reward/mean", "reward/exact_match", "accuracy", "response_length/mean", "actor/kl", "actor/entropy",
                "actor/clip_frac", "actor/grad_norm", "time/rollout", "time/reward", "time/reference",
                "time/actor", "time/weight_sync", "throughput/rollout_tokens_per_s", "throughput/actor_tokens_per_s"):
        assert key in records[-1], key

    # The exported policy loads in transformers and in vLLM.
    final = out / "final"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(final).config.model_type == "qwen2"
    check = subprocess.run([python(), "-m", "tests.plugins.vllm_check", str(final)], cwd=REPO, env=ray_cluster[2],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "VLLM_OK" in check.stdout, check.stderr[-3000:]


def test_user_reward_from_the_job_working_dir(job):
    """examples/my_rewards.py is not installed: Ray ships it with the job's working dir to the driver and to the
    reward actors."""
    _, out = job
    last = read_jsonl(out / "metrics.jsonl")[-1]
    assert last[f"reward/{USER_TERM}"] >= last["reward/exact_match"]  # near misses earn partial credit
    assert last[f"reward/{USER_TERM}/parsed"] > 0.9
    assert last["reward/mean"] == pytest.approx(last["reward/exact_match"] + 0.5 * last[f"reward/{USER_TERM}"],
                                                abs=1e-4)


def death_causes(dashboard: str, skip: set[str] = frozenset()) -> dict[str, set[str]]:
    """Each actor class of the cluster whose actors are dead, and why they died (Ray's state API), leaving out the
    actor ids in ``skip``."""
    from ray.util.state import list_actors

    causes: dict[str, set[str]] = {}
    for actor in list_actors(address=dashboard, filters=[("state", "=", "DEAD")], limit=10_000, detail=True):
        if actor.actor_id not in skip:
            message = (actor.death_cause or {}).get("actor_died_error_context", {}).get("error_message", "")
            causes.setdefault(actor.class_name, set()).add(message)
    return causes


def test_lora_run_trains_the_adapter_and_vllm_samples_with_it(ray_cluster, tmp_path):
    """A GRPO run with a LoRA adapter on the policy: after every update the merged weights reach the vLLM engine, so
    the learner's log-probs before its next update match the sampler's as closely as in step 1, while the policy
    moves away from the reference far more than that gap. Once it has succeeded, the run kills its engine and
    learner at once (``actors.groups.end_models``), and lets its reward worker end with the job."""
    from ray.util.state import list_actors

    _, dashboard, _ = ray_cluster
    earlier = {a.actor_id for a in list_actors(address=dashboard, limit=10_000)}
    out = tmp_path / "lora"
    train(out, "trainer.total_steps=4", "learner.lora_rank=8", "learner.lr=5e-3", "trainer.save_every=0")
    killed = "The actor is dead because it was killed by `ray.kill`."
    deadline = time.monotonic() + 30
    while (causes := death_causes(dashboard, earlier)).keys() < {"RolloutWorker", "LearnerRank", "RewardWorker"}:
        assert time.monotonic() < deadline, causes  # the state API hears of a death a moment after it
        time.sleep(0.5)
    assert causes["RolloutWorker"] == causes["LearnerRank"] == {killed}, causes
    assert killed not in causes["RewardWorker"], causes
    metrics = read_jsonl(out / "metrics.jsonl")
    gaps = [r["actor/rollout_gap/abs_diff_max"] for r in metrics]
    assert max(gaps) < 1e-3, gaps
    assert metrics[-1]["actor/kl"] > 100 * max(gaps[1:]), (metrics[-1]["actor/kl"], gaps)
    assert (out / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "final" / "model.safetensors").is_file()
