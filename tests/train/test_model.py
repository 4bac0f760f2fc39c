"""The PS3 encoder: selection that selects (box first in training, predicted scores at evaluation),
native-aspect scales, global rows from the low-res pass, and the loss without intra-image negatives."""

from __future__ import annotations

import pytest
import torch

from curate.train.config import TrainConfig
from curate.train.geometry import scale_grids
from curate.train.loop import compute_losses
from curate.train.model import PS3Encoder, box_coverage, chosen_rows
from curate.train.selection import choose_patches, resample_scores

TEXT_DIM = 16


class FakeText:
    """A frozen text tower stand-in: a fixed random embedding per text."""
    dim = TEXT_DIM

    def __init__(self):
        self.table: dict[str, torch.Tensor] = {}

    def __call__(self, texts):
        gen = torch.Generator()
        out = []
        for t in texts:
            if t not in self.table:
                gen.manual_seed(hash(t) % 2**31)
                self.table[t] = torch.randn(TEXT_DIM, generator=gen)
            out.append(self.table[t])
        return torch.stack(out)


def config(**model) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"shards": ["unused"]},
                                       "model": {"low_res": 64, "hi_res": 256, "select_k": 8, **model}})


def batch(is_global=(False, False, True)):
    torch.manual_seed(1)
    return {"keys": ["tall", "wide"], "global": torch.randn(2, 3, 64, 64),
            "hires": [torch.randint(0, 256, (3, 256, 43), dtype=torch.uint8),
                      torch.randint(0, 256, (3, 43, 256), dtype=torch.uint8)],
            "boxes": torch.tensor([[0.1, 0.1, 0.5, 0.2], [0.55, 0.2, 0.75, 0.9], [0.0, 0.0, 1.0, 1.0]]),
            "texts": ["a sign", "a cup", "a whole scene"], "is_global": torch.tensor(is_global),
            "region_image": torch.tensor([0, 1, 1]), "top_down": torch.rand(3, 8, 8), "bottom_up": torch.rand(2, 8, 8)}


def test_training_puts_the_box_patches_first_on_both_aspects():
    model = PS3Encoder(config().model, TEXT_DIM).train()
    b = batch()
    out = model(b, FakeText()(b["texts"]))
    assert len(chosen_rows(out["chosen"])) == 2  # the two local rows
    for row, chosen in enumerate(chosen_rows(out["chosen"])):
        image = b["hires"][b["region_image"][row]]
        grids = scale_grids(image.shape[-1], image.shape[-2], 256, [0.5, 1.0], 8)
        for (rows, cols), index in zip(grids, chosen):
            inside = set((box_coverage(b["boxes"][row:row + 1], rows, cols, "cpu")[0] > 0).nonzero().flatten().tolist())
            assert len(index) == 8
            if len(inside) <= 8:
                assert inside <= set(index)
            else:
                assert set(index) <= inside


def test_evaluation_chooses_by_predicted_scores_alone():
    model = PS3Encoder(config().model, TEXT_DIM).eval()
    b = batch()
    with torch.no_grad():
        out = model(b, FakeText()(b["texts"]))
        moved = {**b, "boxes": b["boxes"].flip(0)[[1, 0, 2]] * 0 + torch.tensor([0.9, 0.9, 1.0, 1.0])}
        again = model(moved, FakeText()(b["texts"]))
    assert chosen_rows(out["chosen"]) == chosen_rows(again["chosen"])  # the boxes play no part
    image = b["hires"][0]
    (rows, cols), _ = scale_grids(image.shape[-1], image.shape[-2], 256, [0.5, 1.0], 8)
    expected = choose_patches(resample_scores(out["top_down"][:1].view(1, 8, 8), rows, cols), 8)
    assert list(chosen_rows(out["chosen"])[0][0]) == expected[0].tolist()


def test_global_rows_are_the_low_res_feature():
    model = PS3Encoder(config().model, TEXT_DIM).eval()
    b = batch()
    with torch.no_grad():
        out = model(b, FakeText()(b["texts"]))
        low = model.encode_low(b["global"])
        expected = torch.nn.functional.normalize(model.global_proj(low["pooled"][1]), dim=-1)
    torch.testing.assert_close(out["image"][2], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("context", ["kv_cache", "tokens", "none"])
def test_each_context_mode_runs_and_they_differ(context):
    torch.manual_seed(0)
    model = PS3Encoder(config(low_res_context=context).model, TEXT_DIM).eval()
    reference = PS3Encoder(config().model, TEXT_DIM).eval()
    reference.load_state_dict(model.state_dict())
    b = batch()
    with torch.no_grad():
        a = model(b, FakeText()(b["texts"]))["image"][:2]
        k = reference(b, FakeText()(b["texts"]))["image"][:2]
    assert torch.equal(a, k) == (context == "kv_cache")


def test_options_add_their_parameters():
    plain = PS3Encoder(config(scale_pos_embed=False).model, TEXT_DIM)
    full = PS3Encoder(config(hires_selection_side=128).model, TEXT_DIM)
    assert plain.scale_pos is None and full.scale_pos.shape == (2, 64, 32)
    assert plain.selector.light is None and full.selector.light is not None
    b = batch()
    out = full.train()(b, FakeText()(b["texts"]))
    out["top_down"].sum().backward()
    assert full.selector.light.stem.weight.grad.abs().sum() > 0  # high-res selection features are in use


def test_uhd_scheme_trains_end_to_end():
    cfg = config(scheme="uhd", uhd={"compress": "space_to_depth"})
    model = PS3Encoder(cfg.model, TEXT_DIM).train()
    losses = compute_losses(model, batch(), FakeText(), cfg)
    losses["total"].backward()
    assert model.uhd.newline.grad is not None and model.uhd.merge.weight.grad.abs().sum() > 0


def test_intra_image_pairs_are_not_negatives_by_default():
    b = batch(is_global=(False, False, False))
    b["region_image"] = torch.tensor([0, 0, 1])  # two regions of the tall image
    b["boxes"][1] = torch.tensor([0.2, 0.6, 0.8, 0.7])
    torch.manual_seed(0)
    model = PS3Encoder(config().model, TEXT_DIM).eval()
    text = FakeText()
    default = compute_losses(model, b, text, config())
    with_intra = compute_losses(model, b, text, TrainConfig.model_validate(
        {**config().model_dump(), "loss": {"intra_image_negatives": True}}))
    assert with_intra["contrast"] > default["contrast"]  # two more negative pairs counted
    assert "global" not in default and default["local"] == default["contrast"]
