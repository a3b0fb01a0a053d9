import torch

from rlcore.batch import RolloutBatch, pad_2d


def make(responses, version=0, group0=0):
    n = len(responses)
    return RolloutBatch(
        prompt_ids=[[1, 2]] * n,
        response_ids=responses,
        group_ids=torch.arange(group0, group0 + n),
        rollout_logprobs=pad_2d([[-0.5] * len(r) for r in responses]),
        response_mask=pad_2d([[1.0] * len(r) for r in responses]),
        policy_version=torch.full((n,), version),
        prompts=["p"] * n, responses=["r"] * n, answers=["a"] * n,
        truncated=torch.zeros(n, dtype=torch.bool), metadata=[{}] * n,
    )


def test_pad_2d():
    assert pad_2d([[1, 2], [3]]).tolist() == [[1, 2], [3, 0]]
    assert pad_2d([[1]], width=3).tolist() == [[1, 0, 0]]


def test_concat_pads_to_widest_and_keeps_order():
    a, b = make([[5, 6, 7]]), make([[8], [9, 10]], version=1, group0=1)
    b.reward_terms = {"x": torch.tensor([1.0, 0.0])}
    a.reward_terms = {"x": torch.tensor([0.5])}
    c = RolloutBatch.concat([a, b])
    assert len(c) == 3 and c.response_mask.shape == (3, 3)
    assert c.response_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert c.policy_version.tolist() == [0, 1, 1]
    assert c.reward_terms["x"].tolist() == [0.5, 1.0, 0.0]
    assert c.num_response_tokens == 6


def test_select_and_chunks():
    batch = make([[1], [2, 3], [4], [5, 6]])
    batch.scores = torch.tensor([0.0, 1.0, 2.0, 3.0])
    part = batch.select([3, 1])
    assert part.response_ids == [[5, 6], [2, 3]] and part.scores.tolist() == [3.0, 1.0]
    halves = batch.chunks(2)
    assert [h.group_ids.tolist() for h in halves] == [[0, 1], [2, 3]]
    assert halves[0].response_mask.shape == (2, 2)  # width is kept
