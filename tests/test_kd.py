"""Token-level knowledge distillation (algorithms/kd.py): the teacher's top-k, the student's view of it, the
temperature schedule, the options' checks, the vocabulary check, and real runs (a teacher actor, FSDP, vLLM).

The losses themselves are tested in tests/test_kd_losses.py."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from rlcore.batch import RolloutBatch, trim
from rlcore.functional import logprobs_at, topk_logprobs
from rlcore.schedule import anneal

TEACHER_FIXTURE_SCALE = 30.0
"""The random reasoning model's final norm times this: a teacher whose next-token distributions are peaked."""


# ---- the pure parts --------------------------------------------------------------------------------------------
def test_topk_logprobs_are_the_largest_whole_vocabulary_log_probs_at_the_temperature():
    logits = torch.randn(5, 11)
    values, ids = topk_logprobs(logits, 3, temperature=2.0)
    full = torch.log_softmax(logits / 2.0, -1)
    assert ids.dtype == torch.int32 and values.shape == ids.shape == (5, 3)
    assert torch.allclose(values, full.topk(3, -1).values)
    assert torch.allclose(values, full.gather(-1, ids.long()))
    assert (values[:, :-1] >= values[:, 1:]).all()  # largest first
    every, _ = topk_logprobs(logits, 0)
    assert every.shape == (5, 11) and torch.allclose(every.exp().sum(-1), torch.ones(5))


def test_logprobs_at_gives_the_ids_log_probs_and_the_mass_elsewhere():
    logits = torch.randn(4, 9, requires_grad=True)
    ids = torch.tensor([[0, 3], [8, 1], [2, 4], [5, 6]], dtype=torch.int32)
    at, rest = logprobs_at(logits, ids, temperature=0.5)
    full = torch.log_softmax(logits.detach() / 0.5, -1)
    assert torch.allclose(at, full.gather(-1, ids.long()))
    assert torch.allclose(rest.exp(), 1 - at.exp().sum(-1), atol=1e-6)
    (at.sum() + rest.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_logprobs_at_over_the_whole_vocabulary_has_no_mass_elsewhere_and_finite_gradients():
    logits = torch.randn(3, 5, requires_grad=True)
    ids = torch.arange(5).repeat(3, 1)
    at, rest = logprobs_at(logits, ids)
    assert torch.isinf(rest).all() and (rest < 0).all()
    at.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_anneal_runs_from_start_to_end_linearly_or_along_a_cosine():
    assert anneal(4.0, 1.0, 1, 11) == 4.0 and anneal(4.0, 1.0, 11, 11) == 1.0 and anneal(4.0, 1.0, 30, 11) == 1.0
    assert anneal(4.0, 1.0, 6, 11) == pytest.approx(2.5)
    assert anneal(4.0, 1.0, 6, 11, "cosine") == pytest.approx(2.5)
    assert anneal(4.0, 1.0, 3, 11, "cosine") == pytest.approx(1.0 + 3.0 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert anneal(4.0, 1.0, 3, 11, "cosine") > anneal(4.0, 1.0, 3, 11, "linear")  # slow at the start
    assert anneal(2.0, 1.0, 1, 1) == 1.0


def test_a_batch_cuts_and_joins_its_top_k_along_the_tokens():
    def batch(lengths, k=3):
        width = max(lengths)
        return RolloutBatch(prompt_ids=[[1]] * len(lengths), response_ids=[[2] * n for n in lengths],
                            response_mask=torch.tensor([[1.0] * n + [0.0] * (width + 2 - n) for n in lengths]),
                            group_ids=torch.arange(len(lengths)),
                            teacher_topk_logprobs=torch.randn(len(lengths), width + 2, k),
                            teacher_topk_ids=torch.randint(0, 9, (len(lengths), width + 2, k), dtype=torch.int32))
    cut = trim(batch([2, 4]))
    assert cut.teacher_topk_logprobs.shape == (2, 4, 3) and cut.teacher_topk_ids.shape == (2, 4, 3)
    joined = RolloutBatch.concat([batch([2]), batch([5])])
    assert joined.teacher_topk_logprobs.shape == (2, 7, 3)
    assert (joined.teacher_topk_logprobs[0, 4:] == 0).all()


# ---- the student's and the teacher's passes over real sequences ------------------------------------------------
def test_the_teacher_top_k_and_the_student_view_match_whole_sequence_forward_passes(local_model):
    from transformers import AutoModelForCausalLM

    from rlcore.sequences import response_logprobs_at, response_topk

    model = AutoModelForCausalLM.from_pretrained(local_model).eval()
    prompts, responses = [[5, 6, 7], [5, 6, 7], [8, 9]], [[10, 11], [16, 17, 18], [12, 13, 14, 15]]
    layers = (0, -1, 1)  # the embeddings, the final (normed) state, the first layer's output
    for packing in ("padded", "packed", "grouped"):
        with torch.no_grad():
            values, ids, hidden = response_topk(model, prompts, responses, k=4, temperature=1.5, pad_id=0, width=6,
                                                packing=packing, chunk_tokens=3, hidden_layers=layers)
            lp, at, rest, student_hidden = response_logprobs_at(model, prompts, responses, ids, temperature=1.5,
                                                                pad_id=0, width=6, packing=packing,
                                                                hidden_layers=layers)
            assert response_topk(model, prompts, responses, k=4, temperature=1.5, pad_id=0, width=6)[2] is None
        assert values.shape == ids.shape == (3, 6, 4) and at.shape == (3, 6, 4) and rest.shape == lp.shape == (3, 6)
        assert hidden.shape == student_hidden.shape == (3, 6, 3, model.config.hidden_size)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            with torch.no_grad():
                out = model(torch.tensor([p + r]), output_hidden_states=True)
            logits = out.logits[0, len(p) - 1:len(p) + len(r) - 1]  # [len(r), V]
            states = torch.stack([out.hidden_states[layer][0, len(p) - 1:len(p) + len(r) - 1] for layer in layers], 1)
            assert torch.allclose(hidden[i, :len(r)], states, atol=1e-4), packing
            assert torch.allclose(student_hidden[i, :len(r)], states, atol=1e-4)
            assert (hidden[i, len(r):] == 0).all()
            tempered = torch.log_softmax(logits / 1.5, -1)
            top = tempered.topk(4, -1)
            assert torch.allclose(values[i, :len(r)], top.values, atol=1e-5)
            assert (ids[i, :len(r)].long() == top.indices).all()
            assert torch.allclose(at[i, :len(r)], top.values, atol=1e-5)  # the same model: the same numbers
            assert torch.allclose(rest[i, :len(r)].exp(), 1 - top.values.exp().sum(-1), atol=1e-5)
            assert torch.allclose(lp[i, :len(r)], torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None])[:, 0],
                                  atol=1e-5)  # the hard labels at temperature 1
            assert (values[i, len(r):] == 0).all() and (ids[i, len(r):] == 0).all()


# ---- configuration ---------------------------------------------------------------------------------------------
KD_PRESET = "launch/configs/kd_reasoning.yaml"


def kd_plan(cache_dir, *overrides):
    from launch.build import configure

    return configure(KD_PRESET, ["algorithm.teacher_path=local://tiny-qwen2-reason", f"trainer.cache_dir={cache_dir}",
                                 *overrides])


@pytest.mark.parametrize("override, message", [
    ("algorithm.divergence=kl", "algorithm.divergence='kl' is not one of forward, reverse, jsd"),
    ("algorithm.tail=drop", "algorithm.tail='drop' is not one of bucket, renormalize"),
    ("algorithm.sequences=student", "algorithm.sequences='student' is not one of data, teacher"),
    ("algorithm.temperature_schedule=step", "algorithm.temperature_schedule='step' is not one of linear, cosine"),
    ("algorithm.alpha=1.5", "algorithm.alpha=1.5 must be in [0, 1]"),
    ("algorithm.lmbda=-0.1", "algorithm.lmbda=-0.1 must be in [0, 1]"),
    ("algorithm.temperature_end=0", "algorithm.temperature_end=0.0 must be > 0"),
    ("algorithm.top_k=-1", "algorithm.top_k=-1 must be >= 0"),
    ("algorithm.teacher_workers=3", "algorithm.teacher_workers=3 must divide the 16 sequences of a step"),
    ("reference.enabled=true", "set reference.enabled=false"),
    ("algorithm.lmbda=0.5 rollout.max_staleness=1", "set rollout.max_staleness=0"),
    ("algorithm.teacher_path=null", "algorithm.teacher_path is not set"),
    ("algorithm.hidden_layers=[[1]]", "algorithm.hidden_layers[0]=[1] must be a [student_layer, teacher_layer] pair"),
    ("algorithm.hidden_layers=[[1,x]]", "algorithm.hidden_layers"),
    ("algorithm.hidden_weight=-1", "algorithm.hidden_weight=-1.0 must be >= 0"),
    ("algorithm.hidden_layers=[[1,1]] learner.lora_rank=4", "set learner.lora_rank=0 or algorithm.hidden_layers=[]"),
])
def test_bad_options_are_one_line_errors_naming_the_key(cache_dir, override, message):
    from rlcore.config import ConfigError

    with pytest.raises(ConfigError) as err:
        kd_plan(cache_dir, *override.split())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_jsd_needs_beta_strictly_between_0_and_1(cache_dir):
    from rlcore.config import ConfigError

    kd_plan(cache_dir, "algorithm.divergence=forward", "algorithm.beta=0")  # unused by forward
    with pytest.raises(ConfigError, match=r"algorithm.beta=1.0 must be in \(0, 1\) for divergence=jsd"):
        kd_plan(cache_dir, "algorithm.divergence=jsd", "algorithm.beta=1")


def test_on_policy_steps_are_a_seeded_share_lmbda_of_the_steps(cache_dir):
    never, always = kd_plan(cache_dir).algorithm, kd_plan(cache_dir, "algorithm.lmbda=1").algorithm
    half = kd_plan(cache_dir, "algorithm.lmbda=0.5").algorithm
    draws = [half.on_policy(s) for s in range(1, 401)]
    assert not any(never.on_policy(s) for s in range(1, 401)) and all(always.on_policy(s) for s in range(1, 401))
    assert 0.4 < sum(draws) / len(draws) < 0.6
    again = kd_plan(cache_dir, "algorithm.lmbda=0.5").algorithm  # another run with the same seed
    assert draws == [again.on_policy(s) for s in range(1, 401)]
    other_seed = kd_plan(cache_dir, "algorithm.lmbda=0.5", "trainer.seed=7").algorithm
    assert draws != [other_seed.on_policy(s) for s in range(1, 401)]


def test_the_temperature_follows_the_schedule_over_the_run(cache_dir):
    kd = kd_plan(cache_dir, "algorithm.temperature_start=3", "algorithm.temperature_end=1",
                 "trainer.total_steps=5").algorithm
    assert [kd.temperature(s) for s in range(1, 6)] == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0])


def test_a_teacher_with_another_vocabulary_is_refused_in_one_line_pointing_to_distill_sft(cache_dir):
    from launch.build import prepare
    from rlcore.assets import AssetError

    plan = kd_plan(cache_dir, "algorithm.teacher_path=local://tiny-qwen2-arith")
    with pytest.raises(AssetError) as err:
        prepare(plan)
    text = str(err.value)
    assert text.startswith("algorithm.teacher_path: the tokenizer of") and "algorithm.name=distill_sft" in text
    assert "\n" not in text
    prepare(kd_plan(cache_dir))  # the reasoning model's tokenizer is the student's: accepted


def test_the_kd_loss_mixes_in_the_hard_labels_by_alpha(cache_dir):
    from algorithms.losses import kd_loss, sft_loss

    mask = torch.tensor([[1.0, 1.0, 0.0]])
    teacher = torch.log_softmax(torch.randn(1, 3, 4), -1)[..., :2]
    student_full = torch.log_softmax(torch.randn(1, 3, 4), -1)
    outputs = {"topk_logprobs": student_full[..., :2], "tail_logprob": student_full[..., 2:].logsumexp(-1),
               "logprobs": student_full[..., 0]}
    batch = RolloutBatch(response_mask=mask, teacher_topk_logprobs=teacher, teacher_temperature=torch.tensor([2.0]))
    kd_only, _ = kd_loss(outputs["topk_logprobs"], outputs["tail_logprob"], teacher, mask, temperature=2.0)
    nll, _ = sft_loss(outputs["logprobs"], mask)
    for alpha, expected in ((0.0, kd_only), (1.0, nll), (0.25, 0.75 * kd_only + 0.25 * nll)):
        loss, metrics = kd_plan(cache_dir, f"algorithm.alpha={alpha}").algorithm.loss(outputs, batch)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert metrics["nll"] == pytest.approx(nll.item(), rel=1e-5) and metrics["temperature"] == 2.0


# ---- hidden-state alignment --------------------------------------------------------------------------------------
NARROW_WIDTH = 64


@pytest.fixture(scope="module")
def narrow_teacher(tmp_path_factory, cache_dir) -> str:
    """A random teacher with the reasoning model's tokenizer, 3 layers and hidden width 64 (the student's is 128)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlcore.assets import resolve

    source = resolve("local://tiny-qwen2-reason", cache_dir, "teacher")
    config = AutoConfig.from_pretrained(source)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = NARROW_WIDTH, 128, 3
    config.num_attention_heads, config.num_key_value_heads, config.layer_types = 2, 1, ["full_attention"] * 3
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kd") / "narrow-teacher"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return str(out)


def aligned_batch(teacher: str, layers: list[int]) -> RolloutBatch:
    """Two sequences with a teacher's top-4 and its hidden states of ``layers``, as the kd source makes them."""
    from transformers import AutoModelForCausalLM

    from rlcore.sequences import response_topk

    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
    with torch.no_grad():
        values, ids, hidden = response_topk(model, prompts, responses, k=4, temperature=1.0, pad_id=0, width=3,
                                            hidden_layers=tuple(layers))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return RolloutBatch(prompt_ids=prompts, response_ids=responses, response_mask=mask, teacher_topk_logprobs=values,
                        teacher_topk_ids=ids, teacher_temperature=torch.ones(2), teacher_hidden=hidden)


def test_the_student_projects_its_states_to_the_teachers_width_and_exports_without_the_projections(
        cache_dir, narrow_teacher, tmp_path):
    from transformers import AutoModelForCausalLM

    from actors.models import DistillLM
    from algorithms.losses import hidden_mse

    plan = kd_plan(cache_dir, "algorithm.hidden_layers=[[1,1],[-1,-1]]", f"algorithm.teacher_path={narrow_teacher}")
    spec = plan.algorithm.learners()["actor"]
    assert spec.model_options == {"hidden_layers": [[1, 1], [-1, -1]], "teacher_path": narrow_teacher}
    student_path = resolve_student(cache_dir)
    kind = DistillLM(plan.cfg, spec.settings, **spec.model_options)
    model = kind.build(student_path, dtype="float32")
    projections = model.kd_projection
    assert [tuple(p.weight.shape) for p in projections] == [(NARROW_WIDTH, 128)] * 2
    batch = aligned_batch(narrow_teacher, [1, -1])
    outputs = kind.forward(model, batch)
    assert outputs["hidden"].shape == (2, 3, 2, NARROW_WIDTH)
    loss, _ = hidden_mse(outputs["hidden"], batch.teacher_hidden, batch.response_mask)
    loss.backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in projections)
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0  # the student's layer 1 state is aligned
    # the projections train with the student (its state_dict: checkpoints), but are neither exported nor synced
    sd = model.state_dict()
    assert {"kd_projection.0.weight", "kd_projection.1.weight"} <= set(sd)
    kind.save(kind.weights(sd), student_path, str(tmp_path / "export"))
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert set(exported.state_dict()) == set(kind.weights(sd)) == set(sd) - {"kd_projection.0.weight",
                                                                              "kd_projection.1.weight"}
    # without the teacher's states (a held-out loss), no alignment
    assert "hidden" not in kind.forward(model, dataclasses.replace(batch, teacher_hidden=None))
    # a teacher as wide as the student: the projection starts as the identity
    same = DistillLM(plan.cfg, spec.settings, hidden_layers=[[1, 2]], teacher_path="local://tiny-qwen2-reason")
    wide = same.build(student_path, dtype="float32")
    assert torch.equal(wide.kd_projection[0].weight, torch.eye(128)) and wide.kd_projection[0].weight.requires_grad


def resolve_student(cache_dir) -> str:
    from rlcore.assets import SMALL_REASONING_MODEL, resolve

    return resolve(f"local://{SMALL_REASONING_MODEL}", cache_dir, "model.path")


def test_the_hidden_mse_adds_to_the_kd_loss_by_its_weight(cache_dir, narrow_teacher):
    from algorithms.losses import hidden_mse

    batch = aligned_batch(narrow_teacher, [1])
    student = torch.randn_like(batch.teacher_hidden, dtype=torch.float32)
    outputs = {"topk_logprobs": batch.teacher_topk_logprobs - 0.1, "tail_logprob": torch.full((2, 3), -3.0),
               "logprobs": torch.full((2, 3), -1.0), "hidden": student}
    mse, _ = hidden_mse(student, batch.teacher_hidden, batch.response_mask)
    base = kd_plan(cache_dir).algorithm.loss({k: v for k, v in outputs.items() if k != "hidden"}, batch)[0]
    loss, metrics = kd_plan(cache_dir, "algorithm.hidden_layers=[[1,1]]", "algorithm.hidden_weight=0.3").algorithm.loss(
        outputs, batch)
    assert loss.item() == pytest.approx(base.item() + 0.3 * mse.item(), rel=1e-6)
    assert metrics["hidden_mse"] == pytest.approx(mse.item()) and mse.item() > 0.1


@pytest.mark.parametrize("pair, message", [
    ("[3,1]", "algorithm.hidden_layers[0]=[3, 1]: the student ("),
    ("[1,-6]", "algorithm.hidden_layers[0]=[1, -6]: the teacher ("),
])
def test_a_layer_a_model_does_not_have_is_refused_before_any_actor_starts(cache_dir, pair, message):
    from launch.build import prepare
    from rlcore.config import ConfigError

    with pytest.raises(ConfigError) as err:
        prepare(kd_plan(cache_dir, f"algorithm.hidden_layers=[{pair}]"))
    assert message in str(err.value) and "\n" not in str(err.value)
    expected = "has 2 layers, hidden states 0..2 (or -3..-1)" if "student" in message else "has 4 layers"
    assert expected in str(err.value)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_the_command_line_refuses_such_a_layer_in_one_line_while_the_learners_start(tmp_path, cache_dir):
    """The layers are checked with the rows, in ``render``, which ``launch.train`` runs while Ray and the learners
    start: the run still ends with code 2 and the one line, no traceback, and no step."""
    import subprocess

    from tests.test_e2e import REPO, venv_env
    from tests.zygote import python

    out = tmp_path / "run"
    proc = subprocess.run([python(), "-m", "launch.train", "--config", KD_PRESET, f"trainer.cache_dir={cache_dir}",
                           "algorithm.teacher_path=local://tiny-qwen2-reason", "algorithm.hidden_layers=[[3,1]]",
                           f"trainer.output_dir={out}"], cwd=REPO, env=venv_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]  # after Ray's lines on joining the cluster
    assert last.startswith("config error: algorithm.hidden_layers[0]=[3, 1]: the student ("), proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "metrics.jsonl").exists()


# ---- real runs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peaked_teacher(tmp_path_factory, cache_dir) -> str:
    """The random reasoning model with its final norm scaled up: peaked next-token distributions to learn, without
    training a teacher first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcore.assets import resolve

    source = resolve("local://tiny-qwen2-reason", cache_dir, "teacher")
    out = tmp_path_factory.mktemp("kd") / "teacher"
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.model.norm.weight.mul_(TEACHER_FIXTURE_SCALE)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return str(out)


def received(out: Path) -> list[dict]:
    return [torch.load(f) for f in sorted((out / "received").iterdir())]


def assert_teacher_top_k_arrived_unchanged(records: list[dict], teacher_path: str, k: int) -> None:
    """Every recorded micro-batch's top-k equals the teacher's, recomputed here with one forward pass per sequence."""
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
    checked = 0
    for rec in records:
        temperature = float(rec["temperature"][0])
        for i, (p, r) in enumerate(zip(rec["prompt_ids"], rec["response_ids"])):
            with torch.no_grad():
                logits = teacher(torch.tensor([p + r])).logits[0, len(p) - 1:len(p) + len(r) - 1]
            full = torch.log_softmax(logits / temperature, -1)  # [len(r), V]
            values, ids = rec["values"][i, :len(r)], rec["ids"][i, :len(r)].long()
            assert torch.allclose(values, full.topk(k, -1).values, atol=1e-4)  # the k largest, largest first
            # each id carries its own log-prob (near-equal ones may come in either order)
            assert torch.allclose(full.gather(-1, ids), values, atol=1e-4)
            assert (ids.sort(-1).values[:, 1:] != ids.sort(-1).values[:, :-1]).all()  # k distinct ids
            checked += 1
    assert checked > 0


def run_kd(out: Path, cache_dir: str, teacher: str, *overrides: str):
    from tests.test_agents_e2e import run

    return run(out, "algorithm.name=tests.plugins.recording_kd:RecordingKD", f"algorithm.teacher_path={teacher}",
               f"trainer.cache_dir={cache_dir}", "trainer.save_every=0", "trainer.export=false", *overrides,
               preset=KD_PRESET)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_off_policy_kd_learns_the_teacher_and_its_top_k_reach_the_learner_unchanged(tmp_path, cache_dir,
                                                                                  peaked_teacher):
    """A teacher actor and an FSDP learner, 30 steps on the data's sequences: the KD loss falls, the student covers
    more of the teacher's top-k, and what the learner received is the teacher's top-k of exactly those sequences."""
    out = tmp_path / "kd"
    run_kd(out, cache_dir, peaked_teacher, "trainer.total_steps=30", "trainer.eval_every=0", "algorithm.top_k=8",
           "learner.lr_schedule=constant", "algorithm.temperature_start=2.0", "algorithm.temperature_end=1.0")
    rows = [r for r in metrics(out) if "actor/kd_loss" in r]
    assert len(rows) == 30
    first, last = (sum(r["actor/kd_loss"] for r in part) / len(part) for part in (rows[:3], rows[-5:]))
    assert last < 0.6 * first, (first, last)
    assert rows[-1]["actor/topk_mass"] > rows[0]["actor/topk_mass"] + 0.2
    assert rows[0]["kd/temperature"] == 2.0 and rows[-1]["kd/temperature"] == 1.0
    assert all(r["kd/on_policy"] == 0.0 for r in rows)
    records = received(out)
    assert {float(rec["temperature"][0]) for rec in records} >= {2.0, 1.0}
    assert_teacher_top_k_arrived_unchanged(records[:2] + records[-2:], peaked_teacher, 8)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_kd_on_the_teacher_samples_and_the_student_samples_mixed_by_lmbda(tmp_path, cache_dir, peaked_teacher):
    """sequences=teacher, lmbda=0.5 (GKD's mix): with trainer.seed 0 the draws make steps 2 and 3 on-policy (the
    student sampled on vLLM, synced after each update) and steps 1 and 4 the teacher's samples (its own vLLM
    workers); the teacher actors score every sequence, and the learner receives them with the teacher's whole
    distribution (top_k=0) unchanged; the student and the teacher are evaluated greedily."""
    out = tmp_path / "gkd"
    run_kd(out, cache_dir, peaked_teacher, "trainer.total_steps=4", "trainer.eval_every=4", "data.max_eval_prompts=8",
           "algorithm.sequences=teacher", "algorithm.lmbda=0.5", "algorithm.divergence=jsd", "algorithm.top_k=0",
           "rollout.n=2", "rollout.max_new_tokens=24", "data.train_files=[local://reasoning-train.jsonl]",
           "data.eval_files=[local://reasoning-test.jsonl]", "data.answer_key=reward_model.ground_truth")
    rows = [r for r in metrics(out) if "actor/kd_loss" in r]
    assert [r["kd/on_policy"] for r in rows] == [0.0, 1.0, 1.0, 0.0]
    assert {"eval/accuracy", "eval/teacher_accuracy"} <= set(metrics(out)[-1])
    records = received(out)
    vocab = records[0]["ids"].shape[-1]
    assert vocab > 300  # top_k=0: the whole vocabulary
    assert sum(len(rec["response_ids"]) for rec in records) == 4 * 16 * 2  # 16 prompts x 2 samples a step
    assert all(len(r) <= 24 for rec in records for r in rec["response_ids"])  # sampled (the data's are longer)
    assert_teacher_top_k_arrived_unchanged(records[:1] + records[-1:], peaked_teacher, vocab)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_hidden_state_alignment_pulls_the_students_states_to_a_narrower_teachers(tmp_path, cache_dir, narrow_teacher):
    """A teacher 64 wide, the student 128 wide, two layer pairs: the MSE falls through the learned projections, the
    learner receives the teacher's states of exactly its sequences, and the projections stay out of what the
    student's vLLM workers take (its greedy evaluation) and of its export."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "aligned"
    run_kd(out, cache_dir, narrow_teacher, "trainer.total_steps=12", "trainer.eval_every=12", "data.max_eval_prompts=8",
           "rollout.max_new_tokens=16", "algorithm.top_k=8", "algorithm.hidden_layers=[[1,2],[-1,-1]]",
           "algorithm.hidden_weight=1", "learner.lr_schedule=constant", "trainer.export=true")
    rows = [r for r in metrics(out) if "actor/hidden_mse" in r]
    assert len(rows) == 12
    first, last = (sum(r["actor/hidden_mse"] for r in part) / 3 for part in (rows[:3], rows[-3:]))
    assert last < 0.5 * first, (first, last)
    assert "eval/accuracy" in metrics(out)[-1]
    teacher = AutoModelForCausalLM.from_pretrained(narrow_teacher).eval()
    records = received(out)
    for rec in records[:1] + records[-1:]:
        assert rec["hidden"].shape[2:] == (2, NARROW_WIDTH) and rec["hidden"].dtype == torch.bfloat16
        for i, (p, r) in enumerate(zip(rec["prompt_ids"], rec["response_ids"])):
            with torch.no_grad():
                states = teacher(torch.tensor([p + r]), output_hidden_states=True).hidden_states
            expected = torch.stack([states[layer][0, len(p) - 1:len(p) + len(r) - 1] for layer in (2, -1)], 1)
            assert torch.allclose(rec["hidden"][i, :len(r)].float(), expected, rtol=1e-2, atol=1e-2)
    exported = load_file(out / "final" / "model.safetensors")
    assert exported and not any(k.startswith("kd_projection") for k in exported)
    AutoModelForCausalLM.from_pretrained(out / "final")
