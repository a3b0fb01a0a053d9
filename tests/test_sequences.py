import torch

from rlcore.sequences import pack, response_logprobs


def test_pack_positions():
    input_ids, mask, index, targets = pack([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Response token j of a sample with P prompt tokens is predicted at position P - 1 + j.
    assert index.tolist() == [[2, 3, 4], [0, 1, 2]]
    assert targets.tolist() == [[5, 6, 0], [7, 8, 9]]


class Bigram(torch.nn.Module):
    """logits at position t depend only on the token at t: easy to compute by hand."""

    def __init__(self, vocab=6):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return type("Out", (), {"logits": self.table[input_ids]})


def test_response_logprobs_match_manual():
    torch.manual_seed(0)
    model = Bigram()
    lp, ent = response_logprobs(model, [[1, 2], [3]], [[4, 5], [0]], pad_id=0, width=2, temperature=2.0,
                                with_entropy=True)
    logp = torch.log_softmax(model.table / 2.0, -1)
    logp = logp.detach()
    expected = torch.tensor([[logp[2, 4], logp[4, 5]], [logp[3, 0], 0.0]])
    assert torch.allclose(lp[0], expected[0]) and torch.allclose(lp[1, 0], expected[1, 0])
    p = logp.exp()
    assert torch.allclose(ent[0, 0], -(p[2] * logp[2]).sum())
