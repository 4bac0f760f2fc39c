import numpy as np
import torch

from curate.train.score_maps import box_score_map, selection_recall, union_score_map


def test_box_map_exact_for_patch_aligned_and_partial_boxes():
    expected = np.zeros((4, 4))
    expected[1, 1] = 1.0
    expected[1, 2] = 0.5  # the box ends half way through this patch
    np.testing.assert_allclose(box_score_map((0.25, 0.25, 0.625, 0.5), 4, 4), expected)
    np.testing.assert_allclose(box_score_map((0, 0, 1, 1), 3, 5), np.ones((3, 5)))
    # a box inside one patch covers the share of its area
    np.testing.assert_allclose(box_score_map((0.1, 0.1, 0.2, 0.15), 2, 2)[0, 0], 0.2 * 0.1)


def test_union_map_counts_overlap_once():
    union = union_score_map([(0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)], 4, 4)
    expected = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(union, expected)
    single = union_score_map([(0.25, 0.25, 0.625, 0.5)], 4, 4)
    np.testing.assert_allclose(single, box_score_map((0.25, 0.25, 0.625, 0.5), 4, 4))
    assert union_score_map([], 2, 2).sum() == 0


def test_selection_recall():
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [1.0, 0.0, 0.0, 0.0]])
    recall = selection_recall(scores, gt, select_frac=0.5)  # top 2 patches of 4
    assert recall[0].item() == 0.5 and torch.isnan(recall[1])


def test_a_box_smaller_than_half_a_patch_counts_the_patches_it_covers_most():
    gt = torch.tensor([[0.2, 0.3, 0.3, 0.0]])
    assert selection_recall(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), gt, select_frac=0.25).item() == 0.5
    assert selection_recall(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), gt, select_frac=0.25).item() == 0.0
