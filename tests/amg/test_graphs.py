"""The decoder replayed as CUDA graphs (curate/amg/graphs.py): same outputs as the eager decoder,
fresh inputs on every call. The replay tests need a CUDA GPU and are skipped without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.build import build_efficientvit_sam, make_confident, tiny_efficientvit_sam
from curate.amg.graphs import GraphedDecoder

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_generator_decodes_eagerly_off_the_gpu():
    model = tiny_efficientvit_sam()
    generator = BatchedMaskGenerator(model, AmgParams(cuda_graphs=True))
    assert not isinstance(generator._decode, GraphedDecoder)
    assert generator._decode == model.decode


def test_graphed_decoder_takes_one_crop_at_a_time():
    model = tiny_efficientvit_sam()
    ctx = model.decoder_context(torch.zeros((2, 256, 64, 64)))
    with pytest.raises(ValueError, match="one crop"):
        GraphedDecoder(model.decode)(ctx, torch.zeros((4, 2)))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replays_equal_the_eager_decoder(dtype):
    """Two crops, two prompt counts, calls interleaved: every replay reads the inputs it was given
    (not those it was captured with) and returns what the eager decoder returns, bit for bit; a
    prompt count past max_graphs runs eagerly."""
    torch.manual_seed(0)
    model = make_confident(build_efficientvit_sam("l0")).to("cuda", dtype)
    with torch.inference_mode():
        ctx = model.decoder_context(torch.randn((2, 256, 64, 64), device="cuda", dtype=dtype))
        graphed = GraphedDecoder(model.decode, max_graphs=2)
        calls = [(0, 96), (1, 96), (1, 64), (0, 96), (0, 64), (1, 32)]
        for k, (crop, count) in enumerate(calls):
            coords = torch.rand((count, 2), device="cuda") * 1024
            logits, iou = graphed(ctx.crop(crop), coords)
            logits = logits.clone()  # the next replay of this count overwrites them
            want_logits, want_iou = model.decode(ctx.crop(crop), coords)
            assert torch.equal(logits, want_logits), (k, crop, count)
            assert torch.equal(iou, want_iou), (k, crop, count)
        assert sorted(graphed._graphs) == [64, 96]  # 32 came past max_graphs=2


@pytest.mark.gpu
@needs_cuda
def test_generator_masks_do_not_change_with_graphs():
    from skimage import data
    from PIL import Image

    image = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 768)))
    torch.manual_seed(0)
    model = make_confident(build_efficientvit_sam("xl1")).to("cuda", torch.bfloat16)
    settings = dict(points_per_side=8, box_nms_thresh=1.0, crop_nms_thresh=1.0)
    results = {}
    for graphs in (False, True):
        generator = BatchedMaskGenerator(model, AmgParams(**settings, cuda_graphs=graphs), return_masks=True)
        [results[graphs]] = generator.generate([image])
    assert len(results[False].areas) >= 100
    for name in ("boxes", "areas", "iou_preds", "stability", "masks"):
        assert np.array_equal(getattr(results[False], name), getattr(results[True], name)), name
