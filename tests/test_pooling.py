import pytest
import torch

from grace.pooling import l2_normalize, last_token_pool, mean_pool, pool, pooling_mask


def test_mask_skips_prefix_for_left_and_right_padding():
    left = torch.tensor([[0, 0, 1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 1, 1, 0, 0]])
    assert pooling_mask(left, 2).tolist() == [[False, False, False, False, True, True]]
    assert pooling_mask(right, 2).tolist() == [[False, False, True, True, False, False]]
    assert pooling_mask(right, 0).tolist() == [[True, True, True, True, False, False]]


def test_mean_pool_by_hand():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 1.0]]


def test_last_token_pool_picks_last_selected_position():
    hidden = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, True]])
    assert last_token_pool(hidden, mask).tolist() == [[2.0, 3.0], [10.0, 11.0]]


def test_empty_selection_gives_zero_not_nan():
    hidden = torch.ones(1, 3, 4)
    out = pool(hidden, torch.ones(1, 3, dtype=torch.long), prefix_length=3)
    assert torch.equal(out, torch.zeros(1, 4))


def test_pool_is_unit_length_and_padding_side_free():
    torch.manual_seed(0)
    states = torch.randn(5, 3)
    left = torch.cat([torch.zeros(2, 3), states]).unsqueeze(0)
    right = torch.cat([states, torch.zeros(2, 3)]).unsqueeze(0)
    a = pool(left, torch.tensor([[0, 0, 1, 1, 1, 1, 1]]), prefix_length=1)
    b = pool(right, torch.tensor([[1, 1, 1, 1, 1, 0, 0]]), prefix_length=1)
    assert torch.allclose(a, b)
    assert torch.allclose(a, l2_normalize(states[1:].mean(0, keepdim=True)))
    assert torch.allclose(a.norm(dim=-1), torch.ones(1))


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        pool(torch.ones(1, 2, 2), torch.ones(1, 2), 0, method="max")
