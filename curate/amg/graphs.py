"""The image encoder and the mask decoder replayed as CUDA graphs.

One decoder call launches about a hundred kernels, most of them small (token-sized products,
norms, the image-to-token operands). Launched one by one from Python the host takes longer
than the GPU to run them (on an H100, 576 prompts of one crop: 11.3 ms launched, 8.4 ms
replayed), so the decoding of an image went at the host's pace. Captured once per prompt count
and replayed, a call costs the host two small copies and one launch.

The image encoders launch hundreds of kernels per batch of crops too (EfficientViT-SAM-XL1,
five 1024x1024 crops on an H100: 22 ms replayed, 30-42 ms launched one by one), so the encoder is
replayed the same way, one graph per batch shape.

A graph reads its inputs from fixed addresses: each call copies the crop's context and the
prompts (or the batch of crops) into static buffers first (8 MB per crop, stream-ordered after
the previous replay). The decoder's outputs live in fixed buffers too: the logits a call returns
are overwritten by the next call with the same prompt count, so a caller consumes them
(stream-ordered kernels or copies) before calling again; the IoU predictions and the encoder's
embeddings are returned as copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch

from curate.amg.decoder import CropContext

Decode = Callable[[CropContext, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Encode = Callable[[torch.Tensor], torch.Tensor]
_TENSOR_FIELDS = tuple(f.name for f in fields(CropContext) if f.name != "grid")


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, coords: torch.Tensor, logits: torch.Tensor, iou: torch.Tensor):
        self.graph, self.coords, self.logits, self.iou = graph, coords, logits, iou


class GraphedDecoder:
    """``decode(ctx, coords)`` for one crop's context (``CropContext.crop``) on CUDA, replayed from
    a graph captured on the first call with each prompt count (at most ``max_graphs`` counts;
    beyond them calls run eagerly). Same kernels and arithmetic as ``decode``."""

    def __init__(self, decode: Decode, max_graphs: int = 4, warmup_calls: int = 2):
        self._decode = decode
        self.max_graphs = max_graphs
        self.warmup_calls = warmup_calls
        self._graphs: dict[int, _Captured] = {}
        self._ctx: CropContext | None = None

    def __call__(self, ctx: CropContext, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ctx.src.shape[0] != 1:
            raise ValueError(f"GraphedDecoder takes one crop's context, got {ctx.src.shape[0]} crops")
        static = self._static_context(ctx)
        captured = self._graphs.get(len(coords))
        if captured is None:
            if len(self._graphs) >= self.max_graphs:
                return self._decode(ctx, coords)
            captured = self._capture(static, coords)
        captured.coords.copy_(coords)
        captured.graph.replay()
        return captured.logits, captured.iou.clone()

    def _static_context(self, ctx: CropContext) -> CropContext:
        """The fixed buffers every graph reads the crop's context from, filled with ``ctx``."""
        same = self._ctx is not None and self._ctx.grid == ctx.grid and all(
            getattr(self._ctx, name).shape == getattr(ctx, name).shape
            and getattr(self._ctx, name).dtype == getattr(ctx, name).dtype for name in _TENSOR_FIELDS)
        if not same:  # first call, or another model: graphs of the old buffers are stale
            self._graphs.clear()
            self._ctx = CropContext(grid=ctx.grid, **{name: getattr(ctx, name).clone() for name in _TENSOR_FIELDS})
        else:
            for name in _TENSOR_FIELDS:
                getattr(self._ctx, name).copy_(getattr(ctx, name))
        return self._ctx

    def _capture(self, static: CropContext, coords: torch.Tensor) -> _Captured:
        """Warm up on a side stream (Triton compiles and autotunes there, cuBLAS picks its
        kernels), then capture one call."""
        static_coords = coords.clone()
        warm_up(lambda: self._decode(static, static_coords), self.warmup_calls)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, iou = self._decode(static, static_coords)
        captured = _Captured(graph, static_coords, logits, iou)
        self._graphs[len(coords)] = captured
        return captured


def warm_up(fn: Callable[[], object], calls: int = 1) -> None:
    """Run ``fn`` on a side stream before a capture: Triton compiles and autotunes there, cuBLAS
    and cuDNN pick their kernels, and nothing of that lands in the graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(calls):
            fn()
    torch.cuda.current_stream().wait_stream(side)


class GraphedEncoder:
    """``encode(batch)`` for a batch of preprocessed crops on CUDA, replayed from a graph captured
    on the first call with each batch shape (at most ``max_graphs`` shapes; beyond them calls run
    eagerly). Same kernels and arithmetic as ``encode``; returns a fresh tensor. Only for encoders
    that can be captured (``SamFamilyModel.graphable_encoder``)."""

    def __init__(self, encode: Encode, max_graphs: int = 2, warmup_calls: int = 1):
        self._encode = encode
        self.max_graphs = max_graphs
        self.warmup_calls = warmup_calls
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        key = (tuple(batch.shape), batch.dtype, batch.device)
        captured = self._graphs.get(key)
        if captured is None:
            if len(self._graphs) >= self.max_graphs:
                return self._encode(batch)
            captured = self._capture(key, batch)
        graph, static_batch, embeddings = captured
        static_batch.copy_(batch)
        graph.replay()
        return embeddings.clone()

    def _capture(self, key: tuple, batch: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_batch = batch.clone()
        warm_up(lambda: self._encode(static_batch), self.warmup_calls)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            embeddings = self._encode(static_batch)
        self._graphs[key] = (graph, static_batch, embeddings)
        return self._graphs[key]
