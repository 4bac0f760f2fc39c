"""Choosing high-res patches from score maps, with and without the ground truth mixed in."""

from __future__ import annotations

import torch

from curate.train.selection import choose_patches, patch_pool_weights, resample_scores, top_fraction_mask


def test_predicted_selection_is_the_top_k():
    scores = torch.tensor([[0.1, 3.0, -2.0, 1.0, 0.5]])
    assert choose_patches(scores, 2).tolist() == [[1, 3]]


def test_box_patches_come_first_and_predictions_fill_the_rest():
    scores = torch.tensor([[5.0, 4.0, -1.0, -2.0, 0.0]])
    forced = torch.tensor([[False, False, True, True, False]])
    # both box patches (ordered by their own scores), then the best prediction outside the box
    assert choose_patches(scores, 3, forced).tolist() == [[2, 3, 0]]
    # a budget below the box: the box's best patches by predicted score
    assert choose_patches(scores, 1, forced).tolist() == [[2]]


def test_a_grid_smaller_than_the_budget_repeats_its_patches():
    chosen = choose_patches(torch.tensor([[1.0, 2.0, 0.0]]), 7)
    assert chosen.shape == (1, 7) and sorted(set(chosen[0].tolist())) == [0, 1, 2]


def test_scores_reach_a_native_aspect_grid_by_nearest_neighbour():
    square = torch.arange(4.0).view(1, 2, 2)  # [[0, 1], [2, 3]]
    wide = resample_scores(square, 2, 6).view(2, 6)
    assert wide.tolist() == [[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3]]


def test_pooling_keeps_box_tokens_or_all_when_the_box_was_missed():
    coverage = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    index = torch.tensor([[0, 1, 2], [0, 1, 3]])
    assert patch_pool_weights(coverage, index).tolist() == [[0, 1, 1], [1, 1, 1]]


def test_top_fraction_mask_selects_at_least_one():
    mask = top_fraction_mask(torch.tensor([[0.0, 2.0, 1.0, -1.0]]), 0.01)
    assert mask.tolist() == [[False, True, False, False]]
