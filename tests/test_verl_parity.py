"""Cross-check our public maths against verl 0.9.1 itself, on CPU tensors.

verl (``--no-deps``, with tensordict and three small helpers) is pip-installed
once into ``$RLCORE_TEST_CACHE/verl-0.9.1`` (default ``~/.cache/rlcore``), put at
the *end* of ``sys.path`` so it cannot shadow our packages, and imported. If the
install or the import fails, every test here is skipped with the reason.

Deliberate differences (each documented in our docstrings) are tested on the
part that should agree, with a one-line comment naming the difference.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from algorithms.advantages import gae, group_advantages, reinforce_pp_returns, rloo_advantages
from algorithms.losses import policy_loss, value_loss
from rlcore.functional import (
    LOSS_AGG_MODES,
    aggregate_loss,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
)

VERL_VERSION = "0.9.1"
PIP_ARGS = [f"verl=={VERL_VERSION}", "tensordict==0.10.0", "codetiming", "pyvers", "orjson"]
PIP_TIMEOUT_S = 300
CACHE_ROOT = Path(os.environ.get("RLCORE_TEST_CACHE", str(Path("~/.cache/rlcore").expanduser())))
VERL_DIR = CACHE_ROOT / f"verl-{VERL_VERSION}"

ATOL = 1e-6
RTOL = 1e-5


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[0]


def _import_verl():
    """Import verl's maths modules from VERL_DIR without leaving global side effects behind."""
    if str(VERL_DIR) not in sys.path:
        sys.path.append(str(VERL_DIR))  # appended: our own packages (and the venv's) always win
    env = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    os.environ["VERL_USE_EXTERNAL_PLUGINS"] = "none"  # no entry-point discovery at import
    try:
        core_algos = importlib.import_module("verl.trainer.ppo.core_algos")
        verl_f = importlib.import_module("verl.utils.torch_functional")
        algo_config = importlib.import_module("verl.trainer.config.algorithm").AlgoConfig
    finally:
        # verl's __init__ sets an env var and calls logging.basicConfig; undo both.
        os.environ.clear()
        os.environ.update(env)
        root.handlers[:], root.level = handlers, level
    if not str(Path(core_algos.__file__).resolve()).startswith(str(VERL_DIR.resolve())):
        raise ImportError(f"verl imported from {core_algos.__file__}, not from {VERL_DIR}")
    return core_algos, verl_f, algo_config


def _forget_verl():
    for name in [n for n in sys.modules if n == "verl" or n.startswith(("verl.", "tensordict"))]:
        del sys.modules[name]


def _installed_version() -> str | None:
    f = VERL_DIR / "verl" / "version" / "version"
    return f.read_text().strip() if f.is_file() else None


def _pip_install() -> None:
    VERL_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(VERL_DIR), *PIP_ARGS]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install of verl=={VERL_VERSION} timed out after {PIP_TIMEOUT_S} s")
    if proc.returncode != 0:
        pytest.skip(f"pip install of verl=={VERL_VERSION} failed: {_first_line(proc.stderr + proc.stdout)}")


@pytest.fixture(scope="module")
def verl():
    """(core_algos, torch_functional, AlgoConfig) from verl 0.9.1, installed on first use."""
    if _installed_version() == VERL_VERSION:
        try:
            return _import_verl()
        except Exception:  # a broken cache: reinstall below
            _forget_verl()
    _pip_install()
    try:
        return _import_verl()
    except Exception as e:  # noqa: BLE001 -- any import failure means: cannot compare here
        _forget_verl()
        pytest.skip(f"verl=={VERL_VERSION} does not import: {type(e).__name__}: {_first_line(str(e))}")


# ---------------------------------------------------------------- inputs


def ragged_mask(batch: int, width: int, gen: torch.Generator, empty_row: bool = True) -> torch.Tensor:
    """Right-padded float mask ``[B, T]`` with random lengths; one full row, and one empty row if asked."""
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    lengths[0] = width
    if empty_row and batch > 1:
        lengths[batch // 2] = 0
    return (torch.arange(width)[None, :] < lengths[:, None]).float()


def holey_mask(batch: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Mask with interior zero spans (observation tokens in multi-turn) and every row non-empty."""
    m = (torch.rand(batch, width, generator=gen) > 0.3).float()
    m[:, 0] = 1.0
    return m


SHAPES = [(1, 1), (2, 3), (4, 7), (16, 33), (7, 1)]


def close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = ATOL, rtol: float = RTOL) -> None:
    torch.testing.assert_close(torch.as_tensor(ours), torch.as_tensor(theirs), atol=atol, rtol=rtol, check_dtype=False)


# ---------------------------------------------------------------- aggregate_loss vs agg_loss


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("empty_row", [True, False])
def test_aggregate_loss_matches_agg_loss(verl, mode, shape, empty_row):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(1000 * LOSS_AGG_MODES.index(mode) + 40 * shape[0] + shape[1] + empty_row)
    loss = torch.randn(*shape, generator=gen) * 3 + 1
    mask = ragged_mask(*shape, gen, empty_row=empty_row)
    theirs = core.agg_loss(loss, mask, mode)  # dp_size=1 and no global batch info: one rank
    close(aggregate_loss(loss, mask, mode), theirs)
    close(aggregate_loss(loss, mask.bool(), mode), theirs)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_matches_agg_loss_with_holes_and_grad(verl, mode):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(6, 9, generator=gen)
    mask = holey_mask(6, 9, gen)
    mask[2] = 0.0  # and one fully masked row
    ours_x, theirs_x = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    ours, theirs = aggregate_loss(ours_x, mask, mode), core.agg_loss(theirs_x, mask, mode)
    close(ours, theirs)
    ours.backward()
    theirs.backward()
    close(ours_x.grad, theirs_x.grad)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_all_masked_is_zero_where_verl_is_nan(verl, mode):
    core, _, _ = verl
    loss, mask = torch.randn(3, 4), torch.zeros(3, 4)
    # Deliberate difference: verl divides 0 by 0 rows/tokens (NaN); ours returns 0.
    assert torch.isnan(core.agg_loss(loss, mask, mode))
    assert aggregate_loss(loss, mask, mode).item() == 0.0


# ---------------------------------------------------------------- KL estimators


@pytest.mark.parametrize("ours_kind, verl_kind", [("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl"), ("abs", "abs")])
def test_kl_penalty_matches_verl(verl, ours_kind, verl_kind):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(11)
    lp = torch.randn(8, 13, generator=gen) * 2 - 1
    ref = torch.randn(8, 13, generator=gen) * 2 - 1
    lp[0, :4] = torch.tensor([-40.0, 40.0, -5.0, 5.0])  # drives k3 into both clamps (d and the result)
    a, b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    ours, theirs = kl_penalty(a, ref, ours_kind), core.kl_penalty(b, ref, verl_kind)
    close(ours, theirs)
    close(kl_penalty(lp, ref, verl_kind), theirs)  # verl's names are accepted as aliases
    ours.sum().backward()
    theirs.sum().backward()
    close(a.grad, b.grad)


# ---------------------------------------------------------------- masked statistics


@pytest.mark.parametrize("shape", [(2, 3), (4, 7), (16, 33)])
def test_masked_mean_and_var_match_verl(verl, shape):
    _, vf, _ = verl
    gen = torch.Generator().manual_seed(shape[1])
    x = torch.randn(*shape, generator=gen) * 2 + 0.5
    mask = ragged_mask(*shape, gen)  # includes a fully masked row: both give 0 for it
    close(masked_mean(x, mask), vf.masked_mean(x, mask))
    close(masked_mean(x, mask, dim=-1), vf.masked_mean(x, mask, axis=-1))
    close(masked_mean(x, mask.bool(), dim=-1), vf.masked_mean(x, mask.bool(), axis=-1))
    for unbiased in (True, False):
        close(masked_var(x, mask, unbiased=unbiased), vf.masked_var(x, mask, unbiased=unbiased))


@pytest.mark.parametrize("shape", [(2, 3), (4, 7), (16, 33)])
@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_verl(verl, shape, shift_mean):
    _, vf, _ = verl
    gen = torch.Generator().manual_seed(shape[0] * 100 + shape[1])
    x = torch.randn(*shape, generator=gen) * 3 - 2
    mask = ragged_mask(*shape, gen)
    close(masked_whiten(x, mask, shift_mean=shift_mean), vf.masked_whiten(x, mask, shift_mean=shift_mean))
    # verl raises for a single masked token (Bessel 1/0); ours returns 0 there -- not compared.


def test_masked_mean_ignores_nan_at_masked_positions_like_verl(verl):
    _, vf, _ = verl
    x = torch.tensor([[1.0, 3.0, float("nan")]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert vf.masked_mean(x, mask).item() == 2.0
    close(masked_mean(x, mask), vf.masked_mean(x, mask))


# ---------------------------------------------------------------- outcome advantages


def _grouped_scores(gen: torch.Generator, binary: bool):
    """Scores [B] with groups of sizes 4, 1, 3, 5, 2 (a singleton) and one all-equal group; uids as strings."""
    sizes = [4, 1, 3, 5, 2]
    uids = np.array([f"uid-{g}" for g, n in enumerate(sizes) for _ in range(n)], dtype=object)
    perm = torch.randperm(len(uids), generator=gen)
    uids = uids[perm.numpy()]  # interleave the groups
    scores = (torch.rand(len(uids), generator=gen) > 0.5).float() if binary else torch.randn(len(uids), generator=gen)
    scores[uids == "uid-3"] = 0.7  # a zero-variance group: advantage exactly 0, never NaN
    return scores, uids


def _token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outcome reward on each row's last response token (position 0 for an empty row), ``[B, T]``."""
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # [B]
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(len(scores)), last] = scores
    return rewards


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("binary", [True, False])
def test_group_advantages_matches_verl_grpo(verl, norm_by_std, binary):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(21 + binary)
    scores, uids = _grouped_scores(gen, binary)
    mask = ragged_mask(len(scores), 6, gen)
    adv, ret = core.compute_grpo_outcome_advantage(
        _token_rewards(scores, mask), mask, uids, norm_adv_by_std_in_grpo=norm_by_std
    )  # epsilon 1e-6, unbiased torch.std, singleton group: mean 0, std 1
    ours = group_advantages(scores, list(uids), norm_by_std=norm_by_std)  # [B]
    close(ours[:, None] * mask, adv)
    close(ret, adv)  # verl returns the advantages twice
    _, int_ids = np.unique(uids, return_inverse=True)
    close(group_advantages(scores, torch.as_tensor(int_ids), norm_by_std=norm_by_std)[:, None] * mask, adv)


@pytest.mark.parametrize("binary", [True, False])
def test_rloo_advantages_matches_verl(verl, binary):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(31 + binary)
    scores, uids = _grouped_scores(gen, binary)
    mask = ragged_mask(len(scores), 5, gen)
    adv, _ = core.compute_rloo_outcome_advantage(_token_rewards(scores, mask), mask, uids)
    close(rloo_advantages(scores, list(uids))[:, None] * mask, adv)  # singleton keeps its raw score in both


# ---------------------------------------------------------------- GAE and REINFORCE++


@pytest.mark.parametrize("shape", [(2, 3), (4, 7), (16, 33)])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0)])
def test_gae_matches_verl(verl, shape, holes, gamma, lam):
    core, vf, _ = verl
    gen = torch.Generator().manual_seed(shape[1] + 7 * holes)
    rewards = torch.randn(*shape, generator=gen)
    values = torch.randn(*shape, generator=gen)
    mask = holey_mask(*shape, gen) if holes else ragged_mask(*shape, gen)
    verl_adv, verl_ret = core.compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    ours_adv, ours_ret = gae(rewards, values, mask, gamma, lam)
    close(ours_ret, verl_ret)  # same recursion, same carry through masked positions
    # Deliberate difference: verl whitens the advantages inside GAE; ours leaves that to the caller.
    close(masked_whiten(ours_adv, mask), verl_adv)
    close(ours_adv + values, verl_ret)


@pytest.mark.parametrize("shape", [(2, 3), (4, 7), (16, 33)])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_verl_right_padded(verl, shape, gamma):
    core, _, algo_config = verl
    gen = torch.Generator().manual_seed(shape[1] + 50)
    mask = ragged_mask(*shape, gen)  # right padding, one empty row
    rewards = torch.randn(*shape, generator=gen) * mask  # per-token rewards on response tokens only
    verl_adv, verl_ret = core.compute_reinforce_plus_plus_outcome_advantage(
        rewards, mask, config=algo_config(gamma=gamma)
    )
    ours_adv, ours_ret = reinforce_pp_returns(rewards, mask, gamma)
    close(ours_ret, verl_ret)
    close(ours_adv, verl_adv)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_pp_matches_verl_with_interior_masked_spans(verl, gamma):
    """A multi-turn episode's mask has holes (the environment's tokens): the return is carried through them, so
    the first turn is credited with the outcome, as in verl."""
    core, _, algo_config = verl
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]]) * mask
    verl_adv, verl_ret = core.compute_reinforce_plus_plus_outcome_advantage(rewards, mask,
                                                                            config=algo_config(gamma=gamma))
    ours_adv, ours_ret = reinforce_pp_returns(rewards, mask, gamma)
    close(ours_ret * mask, verl_ret * mask)
    close(ours_adv, verl_adv)
    assert ours_ret[0, 0] == pytest.approx(gamma ** 3)  # three model tokens after it, the hole not counted


# ---------------------------------------------------------------- policy and value losses


def _verl_actor_config(clip_low: float, clip_high: float, clip_c: float):
    from omegaconf import OmegaConf

    # The minimum of ActorConfig that compute_policy_loss_vanilla reads.
    return OmegaConf.create(
        {
            "clip_ratio": clip_low,
            "clip_ratio_low": clip_low,
            "clip_ratio_high": clip_high,
            "clip_ratio_c": clip_c,
            "global_batch_info": {},
        }
    )


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("clip_low, clip_high", [(0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("dual_clip", [None, 3.0, 1.5])
@pytest.mark.parametrize("seq_adv", [False, True])
def test_policy_loss_matches_verl_vanilla(verl, mode, clip_low, clip_high, dual_clip, seq_adv):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(61)
    shape = (8, 11)
    old_lp = -torch.rand(*shape, generator=gen) * 3
    lp_base = old_lp + torch.randn(*shape, generator=gen) * 0.4  # ratios across both clip edges
    lp_base[1, :3] += 3.0  # large ratios, where the dual clip bites for negative advantages
    mask = ragged_mask(*shape, gen)
    adv_seq = torch.randn(shape[0], generator=gen)
    adv_seq[1] = -2.0
    adv_tok = adv_seq[:, None].expand(shape).clone() if seq_adv else torch.randn(*shape, generator=gen)
    adv_tok[1, :3] = -2.0
    adv_ours = adv_seq if seq_adv else adv_tok

    # Deliberate difference: verl always applies the dual clip (c=3 by default); ours only when asked,
    # so "no dual clip" is compared against a c too large to ever bind.
    cfg = _verl_actor_config(clip_low, clip_high, 1e30 if dual_clip is None else dual_clip)
    lp_ours, lp_verl = lp_base.clone().requires_grad_(True), lp_base.clone().requires_grad_(True)
    ours, metrics = policy_loss(lp_ours, old_lp, adv_ours, mask, clip_low, clip_high, dual_clip, agg=mode)
    theirs, verl_metrics = core.compute_policy_loss_vanilla(old_lp, lp_verl, adv_tok, mask, mode, cfg)
    close(ours, theirs)
    ours.backward()
    theirs.backward()
    close(lp_ours.grad, lp_verl.grad)
    close(metrics["clip_frac"], verl_metrics["actor/pg_clipfrac"])
    close(metrics["approx_kl"], verl_metrics["actor/ppo_kl"])
    assert verl_metrics["actor/pg_clipfrac"] > 0  # the inputs exercise the clip
    if dual_clip is not None:
        close(metrics["dual_clip_frac"], verl_metrics["actor/pg_clipfrac_lower"])
        assert verl_metrics["actor/pg_clipfrac_lower"] > 0  # ... and the dual clip


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("clip", [0.5, 0.1, None])
def test_value_loss_matches_verl(verl, mode, clip):
    core, _, _ = verl
    gen = torch.Generator().manual_seed(71)
    shape = (8, 9)
    old_values = torch.randn(*shape, generator=gen)
    values_base = old_values + torch.randn(*shape, generator=gen) * 0.5
    returns = torch.randn(*shape, generator=gen)
    mask = ragged_mask(*shape, gen)
    # clip=None (ours) is the same as an infinite clip range in verl.
    cliprange = float("inf") if clip is None else clip
    v_ours, v_verl = values_base.clone().requires_grad_(True), values_base.clone().requires_grad_(True)
    ours, metrics = value_loss(v_ours, old_values, returns, mask, clip=clip, agg=mode)
    theirs, verl_clipfrac = core.compute_value_loss(v_verl, returns, old_values, mask, cliprange, mode)
    close(ours, theirs)
    ours.backward()
    theirs.backward()
    close(v_ours.grad, v_verl.grad)
    close(metrics["vf_clip_frac"], verl_clipfrac)
    if clip == 0.1:
        assert verl_clipfrac > 0  # the inputs exercise the clip
