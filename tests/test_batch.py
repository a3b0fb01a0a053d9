import pytest
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


def test_concat_renumbers_groups_that_start_at_zero_in_every_part():
    # Each part numbers its own groups from 0: plain concatenation would merge group 0 of a with group 0 of b.
    a, b = make([[1]] * 4), make([[2]] * 4)
    a.group_ids = torch.tensor([0, 0, 1, 1])
    b.group_ids = torch.tensor([0, 0, 1, 1])
    assert torch.cat([a.group_ids, b.group_ids]).tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # what must not happen
    c = RolloutBatch.concat([a, b])
    assert c.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(set(c.group_ids.tolist())) == 4
    # Ids need not be 0-based or consecutive in a part: runs are renumbered in order.
    a.group_ids, b.group_ids = torch.tensor([7, 7, 3, 3]), torch.tensor([7, 7, 7, 9])
    assert RolloutBatch.concat([a, b]).group_ids.tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    assert RolloutBatch.concat([a]).group_ids.tolist() == [0, 0, 1, 1]


def test_concat_rejects_a_field_set_in_only_some_parts():
    import pytest

    a, b = make([[1]]), make([[2]])
    b.scores = torch.tensor([1.0])
    with pytest.raises(ValueError, match="field 'scores' is set in some batches and not others"):
        RolloutBatch.concat([a, b])
    with pytest.raises(ValueError, match="at least one batch"):
        RolloutBatch.concat([])


def test_fields_default_to_none_and_only_keeps_the_named_ones():
    from rlcore.batch import TOKEN_FIELDS, TRAIN_FIELDS

    empty = RolloutBatch()
    assert len(empty) == 0 and empty.prompt_ids is None and empty.prompt_index is None and empty.reward_terms == {}
    batch = make([[1], [2, 3]])
    batch.prompt_index = torch.tensor([5, 9])
    batch.scores = torch.tensor([0.0, 1.0])
    tokens = batch.only(TOKEN_FIELDS)
    assert tokens.response_ids == [[1], [2, 3]] and tokens.response_mask.shape == (2, 2) and len(tokens) == 2
    assert tokens.prompts is None and tokens.scores is None and tokens.group_ids is None
    train = batch.only([f for f in TRAIN_FIELDS if getattr(batch, f) is not None])
    assert train.scores.tolist() == [0.0, 1.0] and train.prompts is None and train.responses is None
    assert set(TOKEN_FIELDS) <= set(TRAIN_FIELDS)
    assert not {"prompts", "responses", "answers", "metadata"} & set(TRAIN_FIELDS)  # the texts stay on the driver
    picked = batch.select([1])
    assert picked.prompt_index.tolist() == [9] and picked.metadata == [{}]


def test_equal_parts_and_run_ids():
    import pytest

    from rlcore.batch import equal_parts, run_ids

    assert equal_parts(6, 3) == [range(0, 2), range(2, 4), range(4, 6)]
    with pytest.raises(ValueError, match="cannot split 5 samples into 2 equal parts"):
        equal_parts(5, 2)
    assert run_ids(torch.tensor([4, 4, 2, 2, 2, 4])).tolist() == [0, 0, 1, 1, 1, 2]


def test_rank_parts_give_each_rank_whole_groups_as_many_samples_and_about_as_many_tokens():
    from rlcore.batch import rank_parts

    lengths = [50, 50, 40, 40, 10, 10, 5, 5]  # four groups of two; contiguous halves would hold 180 and 30 tokens
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    parts = rank_parts(lengths, groups, 2)
    assert parts == [[0, 1, 6, 7], [2, 3, 4, 5]]  # 110 and 100 tokens
    assert rank_parts(lengths, groups, 1) == [list(range(8))]
    assert rank_parts([1, 1, 1, 1], [0, 0, 0, 1], 2) == [[0, 1], [2, 3]]  # a group of 3 fits no rank of 2: halves
    with pytest.raises(ValueError, match="equal parts"):
        rank_parts([1, 1, 1], [0, 1, 2], 2)


def test_token_budget_parts_halve_the_largest_parts_to_reach_a_count():
    from rlcore.batch import token_budget_parts

    assert token_budget_parts([3, 10, 4, 10, 2], 20) == [[1, 3], [2, 0, 4]]
    assert token_budget_parts([3, 10, 4, 10, 2], 20, count=4) == [[1], [3], [2], [0, 4]]
    assert token_budget_parts([3, 10, 4, 10, 2], 20, count=2) == [[1, 3], [2, 0, 4]]
    with pytest.raises(ValueError, match="5 samples into 6"):
        token_budget_parts([3, 10, 4, 10, 2], 20, count=6)


def test_shipment_joins_the_slices_results_in_batch_order():
    from actors.groups import Shipment

    lengths = [50, 40, 10, 5]
    batch = RolloutBatch(prompt_ids=[[1] * n for n in lengths], response_ids=[[2]] * 4,
                         group_ids=torch.tensor([0, 1, 2, 3]))
    shipment = Shipment(batch)
    parts = shipment.parts(2)
    assert parts == [[0, 3], [1, 2]]
    results = [torch.tensor(part, dtype=torch.float).unsqueeze(1) for part in parts]  # each row: its sample index
    assert shipment.joined(results).squeeze(1).tolist() == [0.0, 1.0, 2.0, 3.0]
