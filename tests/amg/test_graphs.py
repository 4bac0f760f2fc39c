"""The encoder and the decoder replayed as CUDA graphs (curate/amg/graphs.py): same outputs as the
eager ones, fresh inputs on every call. The replay tests need a CUDA GPU and are skipped without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.build import build_efficientvit_sam
from curate.amg.graphs import GraphedDecoder, GraphedEncoder
from curate.testing.tiny_sam import make_confident, tiny_efficientvit_sam, tiny_sam
from tests.conftest import apply_marks, gpu_only

needs_cuda = apply_marks(gpu_only())


def test_generator_encodes_and_decodes_eagerly_off_the_gpu():
    model = tiny_efficientvit_sam()
    generator = BatchedMaskGenerator(model, AmgParams(cuda_graphs=True))
    assert not isinstance(generator._decode, GraphedDecoder)
    assert generator._decode == model.decode
    assert generator._encode_batch == model.encode


def test_graphed_decoder_takes_one_crop_at_a_time():
    model = tiny_efficientvit_sam()
    ctx = model.decoder_context(torch.zeros((2, 256, 64, 64)))
    with pytest.raises(ValueError, match="one crop"):
        GraphedDecoder(model.decode)(ctx, torch.zeros((4, 2)))


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


@needs_cuda
def test_generator_masks_do_not_change_with_graphs():
    from PIL import Image
    from skimage import data

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


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encoder_replays_equal_the_eager_encoder(dtype):
    """Two batch shapes, calls interleaved: each replay encodes the batch it was given, bit for bit
    as the eager encoder does, and returns a tensor the next replay does not overwrite; a shape
    past max_graphs runs eagerly."""
    torch.manual_seed(0)
    model = make_confident(build_efficientvit_sam("l0")).to("cuda", dtype)
    size = model.encoder_size
    graphed = GraphedEncoder(model.encode, max_graphs=2)
    with torch.inference_mode():
        earlier = []
        for k, count in enumerate([2, 3, 2, 1, 3]):
            batch = torch.randn((count, 3, size, size), device="cuda")
            ours = graphed(batch)
            assert torch.equal(ours, model.encode(batch)), (k, count)
            earlier.append((batch, ours))
        for k, (batch, ours) in enumerate(earlier):  # not overwritten by later replays
            assert torch.equal(ours, model.encode(batch)), k
    assert sorted(key[0][0] for key in graphed._graphs) == [2, 3]  # 1 came past max_graphs=2


def test_only_encoders_that_can_be_captured_are_graphed():
    """segment_anything's ViT copies host tensors in its forward: its model says so, and the
    generator runs it eagerly (a failed capture would leave CUDA's random generator unusable)."""
    assert tiny_efficientvit_sam().graphable_encoder
    assert not tiny_sam().graphable_encoder


@needs_cuda
def test_generator_graphs_the_efficientvit_encoder_not_sam():
    for model, graphed in ((tiny_efficientvit_sam(), True), (tiny_sam(), False)):
        generator = BatchedMaskGenerator(model.to("cuda"), AmgParams())
        assert isinstance(generator._encode_batch, GraphedEncoder) == graphed
