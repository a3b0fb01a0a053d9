"""Hand-computed checks for the token-level distillation losses in algorithms.losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from algorithms.losses import KD_DIVERGENCES, KD_TAILS, hidden_mse, kd_distributions, kd_divergence, kd_loss

LOG2 = math.log(2.0)


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


def kl(p, q):
    """KL(p || q) of two probability lists, written out."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def jsd(p_t, p_s, beta):
    m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


# Vocabulary of 3, k = 2: the teacher's top 2 are ids 0 and 1.
TEACHER = [0.5, 0.3, 0.2]
STUDENT = [0.6, 0.3, 0.1]


def tiny_inputs():
    """One position ([1, 1, k]): log-probs of the teacher's two ids and the student's mass on the third."""
    student_topk = torch.tensor([[[math.log(0.6), math.log(0.3)]]])
    student_tail = torch.tensor([[math.log(0.1)]])
    teacher_topk = torch.tensor([[[math.log(0.5), math.log(0.3)]]])
    return student_topk, student_tail, teacher_topk


def full_inputs(student_logits, teacher_logits, temperature, k):
    """Top-k inputs built from full logits at a temperature: the teacher's k best ids, the student's tail mass."""
    s_full = torch.log_softmax(student_logits / temperature, dim=-1)
    t_full = torch.log_softmax(teacher_logits / temperature, dim=-1)
    ids = t_full.topk(k, dim=-1).indices
    in_topk = torch.zeros_like(s_full, dtype=torch.bool).scatter(-1, ids, True)
    student_tail = s_full.masked_fill(in_topk, -math.inf).logsumexp(dim=-1)  # -inf when k = vocab
    return s_full.gather(-1, ids), student_tail, t_full.gather(-1, ids), s_full, t_full


# ---------------------------------------------------------------- hand-computed values


def test_kd_distributions_tiny_example():
    s, t = kd_distributions(*tiny_inputs(), tail="bucket")
    assert close(s.exp(), [[[0.6, 0.3, 0.1]]]) and close(t.exp(), [[[0.5, 0.3, 0.2]]])  # other = 1 - 0.8
    s, t = kd_distributions(*tiny_inputs(), tail="renormalize")
    assert close(s.exp(), [[[2 / 3, 1 / 3]]]) and close(t.exp(), [[[5 / 8, 3 / 8]]])  # 0.6/0.9, 0.5/0.8


@pytest.mark.parametrize("divergence", KD_DIVERGENCES)
@pytest.mark.parametrize("tail", KD_TAILS)
def test_kd_loss_hand_computed(divergence, tail):
    if tail == "bucket":  # the 3 outcomes: ids 0, 1 and "other" (id 2)
        p_t, p_s = TEACHER, STUDENT
    else:  # renormalised on ids 0, 1
        p_t, p_s = [0.5 / 0.8, 0.3 / 0.8], [0.6 / 0.9, 0.3 / 0.9]
    beta = 0.3  # asymmetric, so the teacher's and the student's weights in M cannot be swapped unnoticed
    expected = {"forward": kl(p_t, p_s), "reverse": kl(p_s, p_t), "jsd": jsd(p_t, p_s, beta)}[divergence]
    loss, m = kd_loss(*tiny_inputs(), torch.ones(1, 1), divergence=divergence, tail=tail, beta=beta)
    assert close(loss, expected) and close(m["kd_divergence"], expected) and close(m["kd_loss"], expected)
    assert close(m["topk_mass"], 0.9) and close(m["teacher_topk_mass"], 0.8) and m["temperature"] == 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_forward_bucket_written_out():
    # KL(teacher || student) over (id 0, id 1, other) = 0.5 log(0.5/0.6) + 0.3 log(0.3/0.3) + 0.2 log(0.2/0.1)
    expected = 0.5 * math.log(0.5 / 0.6) + 0.2 * math.log(2.0)
    assert close(kd_divergence(*kd_distributions(*tiny_inputs(), tail="bucket"), "forward"), [[expected]])
    # reverse: 0.6 log(0.6/0.5) + 0.1 log(0.1/0.2)
    expected = 0.6 * math.log(0.6 / 0.5) + 0.1 * math.log(0.5)
    assert close(kd_divergence(*kd_distributions(*tiny_inputs(), tail="bucket"), "reverse"), [[expected]])


# ---------------------------------------------------------------- k = vocabulary: the full KL


@pytest.mark.parametrize("tail", KD_TAILS)
def test_full_vocabulary_matches_kl_div(tail):
    torch.manual_seed(0)
    temperature, vocab = 2.0, 5
    student_logits = torch.randn(2, 3, vocab, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(2, 3, vocab, dtype=torch.float64) * 3
    s_topk, s_tail, t_topk, s_full, t_full = full_inputs(student_logits, teacher_logits, temperature, k=vocab)
    assert torch.isneginf(s_tail).all()
    forward = F.kl_div(s_full, t_full, log_target=True, reduction="none").sum(-1)  # KL(teacher || student)
    reverse = F.kl_div(t_full, s_full, log_target=True, reduction="none").sum(-1)  # KL(student || teacher)
    dists = kd_distributions(s_topk, s_tail, t_topk, tail)
    assert close(kd_divergence(*dists, "forward"), forward, 1e-10)
    assert close(kd_divergence(*dists, "reverse"), reverse, 1e-10)
    loss, m = kd_loss(s_topk, s_tail, t_topk, torch.ones(2, 3), divergence="reverse", tail=tail,
                      temperature=temperature)
    assert close(loss, temperature**2 * reverse.mean(), 1e-10) and close(m["topk_mass"], 1.0, 1e-10)
    for divergence in KD_DIVERGENCES:  # gradients through the empty "other" outcome of the bucket rule stay finite
        student_logits.grad = None
        s_topk, s_tail, t_topk, _, _ = full_inputs(student_logits, teacher_logits, temperature, k=vocab)
        s_tail = s_tail.detach().requires_grad_(True)  # a leaf, so that no masked_fill upstream hides a NaN
        kd_loss(s_topk, s_tail, t_topk, torch.ones(2, 3), divergence=divergence, tail=tail)[0].backward()
        assert torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0
        assert s_tail.grad is None if tail == "renormalize" else (s_tail.grad == 0).all()


def test_full_vocabulary_float32_bucket_stays_finite():
    # the teacher's top-k mass rounds to about 1 in float32; its "other" must not become a spurious outcome
    torch.manual_seed(1)
    s_topk, s_tail, t_topk, s_full, t_full = full_inputs(torch.randn(4, 6, 50), torch.randn(4, 6, 50) * 4, 1.0, k=50)
    forward = F.kl_div(s_full, t_full, log_target=True, reduction="none").sum(-1)
    for divergence in KD_DIVERGENCES:
        d = kd_divergence(*kd_distributions(s_topk, s_tail, t_topk, "bucket"), divergence)
        assert torch.isfinite(d).all()
    assert close(kd_divergence(*kd_distributions(s_topk, s_tail, t_topk, "bucket"), "forward"), forward, 1e-5)


def test_bucket_teacher_topk_mass_rounding_to_one():
    # k < vocab, a peaked teacher: p_top1 = exp(-1e-9) is 1.0 in float32, yet the other ids hold about 1e-9
    s_topk, s_tail = torch.log(torch.tensor([[[0.5, 0.3]]])), torch.log(torch.tensor([[0.2]]))
    _, t = kd_distributions(s_topk, s_tail, torch.tensor([[[-1e-9, -40.0]]]), "bucket")
    assert close(t[..., -1], [[math.log(1e-9)]], 1e-3)
    # the top-k mass rounds to (or past) 1: the teacher's other outcome is floored, never -inf or NaN,
    # so the reverse KL of a student with tail mass stays finite
    for teacher_topk in ([[[0.0, -40.0]]], [[[math.log(0.7), math.log(0.4)]]]):
        _, t = kd_distributions(s_topk, s_tail, torch.tensor(teacher_topk), "bucket")
        assert torch.isfinite(t).all() and t[0, 0, -1] < -80
        for divergence in KD_DIVERGENCES:
            assert torch.isfinite(kd_loss(s_topk, s_tail, torch.tensor(teacher_topk), torch.ones(1, 1),
                                          divergence=divergence)[0])


# ---------------------------------------------------------------- the tail rules


def test_bucket_penalises_student_mass_outside_topk_renormalize_does_not():
    # same ratio as the teacher on ids 0, 1 (5 : 3), but the student puts 0.6 of its mass on the other ids
    student_topk = torch.tensor([[[math.log(0.25), math.log(0.15)]]])
    student_tail = torch.tensor([[math.log(0.6)]])
    teacher_topk = torch.tensor([[[math.log(0.5), math.log(0.3)]]])
    for divergence in KD_DIVERGENCES:
        renorm, _ = kd_loss(student_topk, student_tail, teacher_topk, torch.ones(1, 1), divergence=divergence,
                            tail="renormalize")
        bucket, _ = kd_loss(student_topk, student_tail, teacher_topk, torch.ones(1, 1), divergence=divergence,
                            tail="bucket")
        assert close(renorm, 0.0)
        assert bucket > 0.05
    bucket, _ = kd_loss(student_topk, student_tail, teacher_topk, torch.ones(1, 1), tail="bucket")
    assert close(bucket, 0.5 * math.log(2) + 0.3 * math.log(2) + 0.2 * math.log(0.2 / 0.6))


def test_teacher_zero_probability_outcome_contributes_nothing():
    # 0 log 0 = 0: the teacher gives id 1 no mass, the forward KL skips it (value and gradient)
    student = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]])).requires_grad_(True)
    teacher = torch.tensor([[[math.log(0.5), -math.inf, math.log(0.5)]]])
    d = kd_divergence(student, teacher, "forward")
    assert close(d, [[0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.25)]])
    d.sum().backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 0, 1] == 0
    assert close(kd_divergence(student, teacher, "jsd"), [[jsd([0.5, 0.0, 0.5], [0.5, 0.25, 0.25], 0.5)]])
    # the mirror case: the student gives id 1 no mass, the reverse KL skips it
    student = torch.tensor([[[math.log(0.5), -math.inf, math.log(0.5)]]], requires_grad=True)
    teacher = torch.log(torch.tensor([[[0.25, 0.5, 0.25]]])).requires_grad_(True)
    for divergence, expected in (("reverse", LOG2), ("jsd", jsd([0.25, 0.5, 0.25], [0.5, 0.0, 0.5], 0.5))):
        student.grad = None
        d = kd_divergence(student, teacher, divergence)
        assert close(d, [[expected]])
        d.sum().backward()
        assert torch.isfinite(student.grad).all() and student.grad[0, 0, 1] == 0
        assert teacher.grad is None  # the teacher's log-probs are constants


# ---------------------------------------------------------------- generalized JSD


def test_jsd_symmetric_zero_and_bounded():
    torch.manual_seed(2)
    a = torch.log_softmax(torch.randn(3, 4, 6) * 5, dim=-1)
    b = torch.log_softmax(torch.randn(3, 4, 6) * 5, dim=-1)
    ab, ba = kd_divergence(a, b, "jsd", beta=0.5), kd_divergence(b, a, "jsd", beta=0.5)
    assert close(ab, ba) and (ab > 0).all() and (ab <= LOG2 + 1e-6).all()
    assert not close(kd_divergence(a, b, "jsd", beta=0.2), kd_divergence(b, a, "jsd", beta=0.2))
    assert close(kd_divergence(a, a, "jsd", beta=0.3), torch.zeros(3, 4))
    # disjoint supports reach the bound exactly: 0.5 KL([1, 0] || [.5, .5]) + 0.5 KL([0, 1] || [.5, .5]) = log 2
    p, q = torch.tensor([[[0.0, -math.inf]]]), torch.tensor([[[-math.inf, 0.0]]])
    assert close(kd_divergence(p, q, "jsd"), [[LOG2]])


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_jsd_beta_outside_open_interval_raises(beta):
    a = torch.log_softmax(torch.randn(1, 1, 3), dim=-1)
    with pytest.raises(ValueError, match="beta"):
        kd_divergence(a, a, "jsd", beta=beta)
    with pytest.raises(ValueError, match="beta"):
        kd_loss(a[..., :2], torch.zeros(1, 1), a[..., :2], torch.ones(1, 1), divergence="jsd", beta=beta)


# ---------------------------------------------------------------- temperature, masking, gradients


def test_temperature_squared_scale():
    torch.manual_seed(3)
    s_topk, s_tail, t_topk, _, _ = full_inputs(torch.randn(2, 4, 8), torch.randn(2, 4, 8), 2.0, k=3)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    loss, m = kd_loss(s_topk, s_tail, t_topk, mask, temperature=2.0)
    div = kd_divergence(*kd_distributions(s_topk, s_tail, t_topk, "bucket"), "forward")  # [2, 4]
    mean_div = (div * mask).sum() / mask.sum()
    assert close(loss, 4 * mean_div) and close(m["kd_divergence"], mean_div) and close(m["kd_loss"], 4 * mean_div)
    assert m["temperature"] == 2.0 and mean_div > 0
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s_topk, s_tail, t_topk, mask, temperature=0.0)


@pytest.mark.parametrize("divergence", KD_DIVERGENCES)
@pytest.mark.parametrize("tail", KD_TAILS)
@pytest.mark.parametrize("garbage", [1e4, -1e4, 0.0])
def test_padding_changes_nothing(divergence, tail, garbage):
    torch.manual_seed(4)
    s_topk, s_tail, t_topk, _, _ = full_inputs(torch.randn(2, 3, 6), torch.randn(2, 3, 6), 1.0, k=2)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    pad = ~mask.bool()
    kw = dict(divergence=divergence, tail=tail)
    # reference: the three real positions alone, as a [1, 3] batch
    ref, ref_m = kd_loss(s_topk[~pad][None], s_tail[~pad][None], t_topk[~pad][None], torch.ones(1, 3), **kw)

    s_topk = s_topk.masked_fill(pad.unsqueeze(-1), garbage).requires_grad_(True)
    s_tail = s_tail.masked_fill(pad, garbage).requires_grad_(True)
    t_topk = t_topk.masked_fill(pad.unsqueeze(-1), garbage).requires_grad_(True)
    loss, m = kd_loss(s_topk, s_tail, t_topk, mask, **kw)
    assert close(loss, ref) and m == pytest.approx(ref_m, abs=1e-6)
    loss.backward()
    assert t_topk.grad is None  # the teacher is a constant
    grads = [s_topk.grad] + ([s_tail.grad] if tail == "bucket" else [])
    assert tail == "bucket" or s_tail.grad is None  # renormalize ignores the student's tail
    for grad in grads:
        assert torch.isfinite(grad).all() and (grad[pad] == 0).all()
    assert s_topk.grad[~pad].abs().sum() > 0


def test_all_zero_mask_gives_zero():
    s_topk = torch.full((2, 3, 2), 5e3, requires_grad=True)
    loss, m = kd_loss(s_topk, torch.zeros(2, 3), torch.zeros(2, 3, 2), torch.zeros(2, 3), divergence="reverse")
    loss.backward()
    assert loss.item() == 0.0 and all(v == 0.0 for k, v in m.items() if k != "temperature")
    assert (s_topk.grad == 0).all()


def test_sgd_on_forward_kd_moves_student_toward_teacher():
    torch.manual_seed(5)
    vocab, k = 8, 3
    teacher_logits = torch.randn(2, 4, vocab) * 2
    logits = torch.randn(2, 4, vocab, requires_grad=True)
    mask = torch.ones(2, 4)
    opt = torch.optim.SGD([logits], lr=1.0)
    losses = []
    for _ in range(30):
        s_topk, s_tail, t_topk, _, _ = full_inputs(logits, teacher_logits, 1.0, k=k)
        loss, _ = kd_loss(s_topk, s_tail, t_topk, mask, divergence="forward", tail="bucket")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b <= a + 1e-7 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.3 * losses[0]


# ---------------------------------------------------------------- argument checks


def test_unknown_names_raise():
    s_topk, s_tail, t_topk = tiny_inputs()
    with pytest.raises(ValueError, match="'mean'.*bucket"):
        kd_distributions(s_topk, s_tail, t_topk, tail="mean")
    with pytest.raises(ValueError, match="'kl'.*forward"):
        kd_divergence(s_topk, t_topk, "kl")
    with pytest.raises(ValueError, match="'tv'"):
        kd_loss(s_topk, s_tail, t_topk, torch.ones(1, 1), divergence="tv")
    with pytest.raises(ValueError, match="'top'"):
        kd_loss(s_topk, s_tail, t_topk, torch.ones(1, 1), tail="top")


# ---- hidden-state alignment ----------------------------------------------------------------------------------------
def test_hidden_mse_is_the_token_mean_of_the_squared_error_averaged_over_layers_and_dimensions():
    # one sequence, 2 tokens (the second padding), 2 layer pairs of width 2
    student = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]])  # [1, 2, 2, 2]
    teacher = torch.tensor([[[[0.0, 0.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[1.0, 0.0]])
    loss, metrics = hidden_mse(student, teacher, mask)
    # token 1: layer 0 errors 1, 4; layer 1 errors 1, 9 -> (1 + 4 + 1 + 9) / 4; token 2 is padding
    assert close(loss, 15 / 4) and metrics["hidden_mse"] == pytest.approx(15 / 4)
    two_tokens, _ = hidden_mse(student, teacher, torch.ones(1, 2))
    assert close(two_tokens, (15 / 4 + 81) / 2)  # every token weighs the same


def test_hidden_mse_ignores_padding_gives_the_teacher_no_gradient_and_checks_shapes():
    student = torch.randn(2, 3, 1, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 1, 4, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, _ = hidden_mse(student, teacher.to(torch.bfloat16), mask)
    garbage = student.detach().clone()
    garbage[mask == 0] = 1e4
    assert close(loss, hidden_mse(garbage, teacher.to(torch.bfloat16), mask)[0])
    loss.backward()
    assert (student.grad[mask == 0] == 0).all() and (student.grad[mask == 1] != 0).any() and teacher.grad is None
    assert hidden_mse(student, teacher, torch.zeros(2, 3))[0].item() == 0.0
    with pytest.raises(ValueError, match=r"student hidden states \(2, 3, 1, 4\) and the teacher's \(2, 3, 1, 3\)"):
        hidden_mse(student, teacher[..., :3], mask)
