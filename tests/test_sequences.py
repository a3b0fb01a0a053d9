"""Per-response-token outputs: the padded, packed and grouped layouts, and log-probs computed in chunks."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rlcore.functional import chunked_logprobs, entropy_from_logits, logprobs_from_logits
from rlcore.sequences import grouped_pays, layout, response_logprobs, response_scores, response_values


def test_padded_layout_positions():
    lay = layout([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0, width=4)
    assert lay.inputs["input_ids"].tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert lay.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Response token j of a sample with P prompt tokens is predicted at position P - 1 + j of its row (rows of 5).
    assert lay.read.tolist() == [2, 3, 5, 6, 7]
    assert (lay.rows.tolist(), lay.cols.tolist(), lay.targets.tolist()) == ([0, 0, 1, 1, 1], [0, 1, 0, 1, 2],
                                                                           [5, 6, 7, 8, 9])
    assert lay.scatter(torch.arange(1.0, 6.0)).tolist() == [[1, 2, 0, 0], [3, 4, 5, 0]]


def test_packed_layout_has_no_padding_and_restarts_positions():
    lay = layout([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0, packing="packed")
    assert lay.inputs["input_ids"].tolist() == [[1, 2, 3, 5, 6, 4, 7, 8, 9]]
    assert lay.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    assert "attention_mask" not in lay.inputs
    assert lay.read.tolist() == [2, 3, 5, 6, 7]  # the second sample starts at 5: its token 7 is predicted by 4 at 5
    assert lay.shape == (2, 3)


def test_grouped_layout_shares_the_prompt_of_consecutive_samples():
    lay = layout([[1, 2, 3], [1, 2, 3], [1, 2, 3], [4]], [[5, 6], [], [7], [8, 9, 10]], pad_id=0, packing="grouped")
    assert lay.inputs["input_ids"].tolist() == [[1, 2, 3, 5, 6, 7], [4, 8, 9, 10, 0, 0]]
    # every response starts where the prompt ends
    assert lay.inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 3, 0, 0]]
    # the first token of each response is predicted by the prompt's last position (2, shared); the rest by the
    # response's own previous token; the empty response has none (rows of 6)
    assert lay.read.tolist() == [2, 3, 2, 6, 7, 8]
    assert lay.own.tolist() == [3, 4, 5, 7, 8, 9]
    assert (lay.rows.tolist(), lay.cols.tolist()) == ([0, 0, 2, 3, 3, 3], [0, 1, 0, 0, 1, 2])
    mask = lay.inputs["attention_mask"][:, 0].int().tolist()
    assert mask[0][4] == [1, 1, 1, 1, 1, 0]  # the first response's second token: the prompt and itself
    assert mask[0][5] == [1, 1, 1, 0, 0, 1]  # the third response's token sees the prompt, not the first response
    assert mask[1][4] == [1, 0, 0, 0, 1, 0]  # padding sees the prompt and padding: no empty softmax row
    assert lay.scatter(torch.arange(1.0, 7.0)).tolist() == [[1, 2, 0], [0, 0, 0], [3, 0, 0], [4, 5, 6]]


def test_auto_groups_where_it_computes_less():
    """The arithmetic job's shape (8 samples per 5-token prompt, up to 6 new tokens, hidden 256) groups; 64 new tokens on
    hidden 768 (the mid benchmark), distinct prompts, or an unknown hidden size do not."""
    prompts = [[1, 2, 3, 4, 5]] * 8 + [[6, 7, 8, 9, 10]] * 8
    short = [[3] * (1 + i % 6) for i in range(16)]
    long = [[3] * 64 for _ in range(16)]
    assert grouped_pays(prompts, short, 256)
    assert not grouped_pays(prompts, long, 768)
    assert not grouped_pays([[1, i] for i in range(16)], short, 256)
    assert not grouped_pays(prompts, short, 0)
    assert layout(prompts, short, pad_id=0, packing="auto", hidden_size=256).inputs["input_ids"].shape[0] == 2
    assert layout(prompts, long, pad_id=0, packing="auto", hidden_size=768).inputs["input_ids"].shape[0] == 16
    with pytest.raises(ValueError, match="layout 'shared' is not one of"):
        layout(prompts, short, pad_id=0, packing="shared")


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="empty prompt"):
        layout([[1], []], [[2], [3]], pad_id=0)


class Bigram(torch.nn.Module):
    """logits at position t depend only on the token at t: easy to compute by hand, whatever the layout."""

    def __init__(self, vocab=6):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, use_cache=False, **layout_inputs):
        return type("Out", (), {"logits": self.table[input_ids]})


@pytest.mark.parametrize("packing", ["padded", "packed", "grouped"])
def test_response_logprobs_match_manual(packing):
    torch.manual_seed(0)
    model = Bigram()
    lp, ent = response_logprobs(model, [[1, 2], [3], [3]], [[4, 5], [0], [5, 1]], pad_id=0, width=3, temperature=2.0,
                                with_entropy=True, packing=packing)
    logp = torch.log_softmax(model.table / 2.0, -1).detach()
    expected = torch.tensor([[logp[2, 4], logp[4, 5], 0.0], [logp[3, 0], 0.0, 0.0], [logp[3, 5], logp[5, 1], 0.0]])
    assert torch.allclose(lp, expected)
    p = logp.exp()
    assert torch.allclose(ent[0, 0], -(p[2] * logp[2]).sum()) and ent[1, 1] == 0


def test_chunked_logprobs_equal_the_full_computation_with_their_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    tokens = torch.randint(0, 50, (37,))
    logits = hidden @ weight.T + bias
    full_lp, full_ent = logprobs_from_logits(logits, tokens, 0.7), entropy_from_logits(logits, 0.7)
    full_grads = torch.autograd.grad((full_lp * 1.3 + full_ent).sum(), (hidden, weight, bias))
    lp, ent = chunked_logprobs(hidden, weight, bias, tokens, 0.7, chunk=8, with_entropy=True)  # 5 chunks, one short
    grads = torch.autograd.grad((lp * 1.3 + ent).sum(), (hidden, weight, bias))
    assert torch.allclose(lp, full_lp, atol=1e-5) and torch.allclose(ent, full_ent, atol=1e-5)
    for got, want in zip(grads, full_grads):
        assert torch.allclose(got, want, atol=1e-4)
    lp, ent = chunked_logprobs(hidden, weight, None, tokens, chunk=8)
    assert ent is None and not torch.allclose(lp, full_lp, atol=1e-3)  # without the bias: a different answer


def _ragged_batch(vocab: int, seed: int = 0):
    """Five samples of ragged lengths, the first three of one prompt (a group), the last two of another."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (p,), generator=g).tolist() for p in (5, 3)]
    responses = [torch.randint(3, vocab, (r,), generator=g).tolist() for r in (9, 2, 6, 1, 12)]
    return [prompts[0]] * 3 + [prompts[1]] * 2, responses


def test_packed_and_chunked_equal_padded_on_a_real_model(local_model):
    """The tiny Qwen2 model: packed (position ids, block-diagonal SDPA mask), grouped (shared prompts, a 4D mask) and
    chunked log-probs, entropy and their gradients equal the padded, full-logits computation."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(local_model)
    prompts, responses = _ragged_batch(model.config.vocab_size)

    def run(packing, chunk):
        model.zero_grad()
        lp, ent = response_logprobs(model, prompts, responses, pad_id=0, width=12, temperature=0.9,
                                    with_entropy=True, packing=packing, chunk_tokens=chunk)
        (lp.sum() + 0.1 * ent.sum()).backward()
        return lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    lp0, ent0, grads0 = run("padded", chunk=0)
    assert lp0[1, 2:].eq(0).all() and lp0[0, :9].ne(0).all()
    for packing, chunk in (("packed", 0), ("padded", 7), ("packed", 7), ("grouped", 0), ("grouped", 7)):
        lp, ent, grads = run(packing, chunk)
        assert torch.allclose(lp, lp0, atol=2e-5), (packing, chunk, (lp - lp0).abs().max())
        assert torch.allclose(ent, ent0, atol=2e-5)
        for name, g in grads.items():
            assert torch.allclose(g, grads0[name], atol=1e-4, rtol=1e-3), (packing, chunk, name)


@pytest.mark.parametrize("outputs", [response_values, response_scores])
def test_packed_and_grouped_values_and_scores_equal_padded(local_model, outputs):
    """A critic's values (read where each token is predicted) and a reward model's scores (read at the token)."""
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(local_model, num_labels=1).eval()
    prompts, responses = _ragged_batch(model.config.vocab_size, seed=1)
    with torch.no_grad():
        padded = outputs(model, prompts, responses, pad_id=0, width=12)
        for packing in ("packed", "grouped"):
            other = outputs(model, prompts, responses, pad_id=0, width=12, packing=packing)
            assert torch.allclose(other, padded, atol=1e-5), packing
    assert padded.abs().sum() > 0


PEAK = textwrap.dedent("""
    import resource, sys, torch
    from rlcore.functional import chunked_logprobs, logprobs_from_logits, entropy_from_logits
    torch.manual_seed(0)
    tokens, hidden_size, vocab = 2048, 64, 65536
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size) * 0.05).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "chunked":
        lp, ent = chunked_logprobs(hidden, weight, None, targets, 1.0, chunk=128, with_entropy=True)
    else:
        logits = hidden @ weight.T
        lp, ent = logprobs_from_logits(logits, targets), entropy_from_logits(logits)
    (lp.sum() + ent.sum()).backward()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
""")


def _peak_bytes(*modes: str) -> list[int]:
    """Peak resident memory of the computation in each mode, each in a fresh process, all at once. A fixed mmap
    threshold makes glibc hand every large buffer back when it is freed (its default adapts the threshold and keeps
    freed buffers in the heap), so the resident peak follows the live tensors."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", PEAK, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for mode in modes]
    peaks = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        peaks.append(int(out.split()[-1]))
    return peaks


def test_chunked_logprobs_bound_peak_memory():
    """2048 response tokens, a 65,536-token vocabulary: the full fp32 logits alone are 512 MiB. In chunks of 128
    tokens, forward and backward together stay under 512 MiB above the inputs: a chunk's logits are 32 MiB, and the
    softmax, log-softmax and their gradients take several such buffers at once (measured: 384 MiB, of which about 150 MiB is the first matmul's fixed cost). The full
    computation peaks at several times the bound (measured: about 3.5 GiB)."""
    bound = 512 * 2**20
    chunked, full = _peak_bytes("chunked", "full")
    assert chunked < bound, f"chunked peak {chunked / 2**20:.0f} MiB"
    assert full > 3 * bound, f"full peak {full / 2**20:.0f} MiB"  # the bound is one the full computation breaks
