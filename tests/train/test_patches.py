"""Embedding chosen patches only gives the tokens the full view's embedding would."""

from __future__ import annotations

import torch

from curate.train.patches import embed_patches, grid_positions, patch_pixels
from tests.train.test_attention import tiny_vit


def test_all_patches_at_the_native_grid_equal_the_vit_embeddings():
    vm = tiny_vit()
    view = torch.randn(3, 32, 32)
    torch.testing.assert_close(embed_patches(vm.embeddings, view), vm.embeddings(view[None])[0],
                               atol=1e-5, rtol=1e-5)


def test_chosen_patches_of_a_wide_view_are_rows_of_the_full_embedding():
    vm = tiny_vit()
    view = torch.randn(3, 16, 64)  # 2 x 8 patches
    full = embed_patches(vm.embeddings, view)
    index = torch.tensor([[0, 9, 15], [3, 3, 4]])
    torch.testing.assert_close(embed_patches(vm.embeddings, view, index), full[index])
    conv = vm.embeddings.patch_embedding(view[None]).flatten(2)[0].t()
    torch.testing.assert_close(full - grid_positions(vm.embeddings.position_embedding.weight, 2, 8), conv,
                               atol=1e-5, rtol=1e-5)


def test_a_scale_residual_moves_only_positions():
    vm = tiny_vit()
    view = torch.randn(3, 16, 64)
    residual = torch.zeros(16, 32)
    residual[:, 0] = 1.0
    moved = embed_patches(vm.embeddings, view, residual=residual) - embed_patches(vm.embeddings, view)
    torch.testing.assert_close(moved[:, 0], torch.ones(16), atol=1e-5, rtol=1e-5)
    assert moved[:, 1:].abs().max() < 1e-5


def test_patch_pixels_are_row_major():
    view = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6)
    pixels = patch_pixels(view, 2)  # 2 x 3 patches
    assert pixels.shape == (6, 8)
    assert pixels[4].tolist() == view[:, 2:4, 2:4].reshape(-1).tolist()
