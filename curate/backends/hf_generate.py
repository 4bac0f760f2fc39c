"""Batched text generation with transformers, shared by the hf caption and retarget backends."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from curate.backends.grouped_attention import use_grouped_decode
from curate.backends.shared_prefix import (
    MIN_SHARED_TOKENS,
    SharedPrefix,
    common_prefix_length,
    prefix_then_padded,
    unpadded_rows,
)
from curate.backends.split_prefill import PREFILL_GROUP_OVERHEAD_TOKENS, generate_split_prefill
from curate.backends.types import Generation
from curate.config import DTYPE_NAMES

log = logging.getLogger("curate")
Item = TypeVar("Item")


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    # Half precision on CPU is slow or unsupported for several kernels: run fp32 there.
    if device.type == "cpu" and name != "fp32":
        log.info("%s requested on CPU: running in fp32", name)
        return torch.float32
    return getattr(torch, DTYPE_NAMES[name])


def prepare_for_generation(model, cfg, grouped_decode: bool) -> None:
    """Attention settings of a generation actor's process. With ``grouped_decode`` (and sdpa), decoding
    reads the KV cache once per key/value head (``use_grouped_decode``). PyTorch's SDPA is kept off
    its cuDNN kernel, which builds an execution plan for every new shape: generation's shapes change
    with every batch (prompt and crop lengths, a cache that grows by a token per step), so nearly
    every batch of a pipeline run is a first sight. On an H200 a first sight ran at 23.8 crops/s with
    cuDNN against 33.5 without it, which equals the cuDNN path on shapes seen before (Qwen2-VL-7B,
    benchmarks/RESULTS.md); the flash and memory-efficient kernels need no plan. The switch is
    process-wide: the actor holds this model alone."""
    if grouped_decode and cfg.attn_implementation == "sdpa":
        use_grouped_decode(model)
    torch.backends.cuda.enable_cudnn_sdp(False)


def generation_kwargs(cfg, pad_token_id: int | None) -> dict:
    kwargs = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=pad_token_id)
    if cfg.temperature > 0:
        kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if cfg.kv_cache == "static":
        kwargs.update(cache_implementation="static", disable_compile=not cfg.compile)
        if cfg.compile and torch.cuda.is_available():  # generate compiles on GPUs only (and warns elsewhere)
            from transformers import CompileConfig

            # One graph for every batch size and cache length: compiled for fixed shapes, each new
            # (rows, cache length) of a run's batches compiled again, for a minute or more each.
            # CUDA graphs are still recorded per shape: on an H200 a pass over new shapes ran as
            # fast as its repeat (Qwen2-VL-7B, benchmarks/RESULTS.md, eighth session).
            kwargs["compile_config"] = CompileConfig(dynamic=True)
    return kwargs


def compiles_decoding(model, gen_kwargs: dict) -> bool:
    """Whether generate will compile its decoding step: a static cache, compile on, a GPU."""
    return (gen_kwargs.get("cache_implementation") == "static" and not gen_kwargs.get("disable_compile")
            and model.device.type == "cuda")


# Batch sizes a warm-up decodes: compiled for dynamic shapes, a batch of one row still gets a graph of
# its own (compilers specialise sizes 0 and 1), and a call's last batch can be a single crop. 5 is no
# head count or other size of the model, so its dimension stays a variable.
WARM_UP_BATCHES = (5, 1)


def padding_id(tokenizer, gen_kwargs: dict) -> int:
    """The token that left-pads a batch: generate's ``pad_token_id``, else the tokenizer's."""
    pad_id = gen_kwargs.get("pad_token_id")
    return tokenizer.pad_token_id if pad_id is None else pad_id


def stop_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate(model, tokenizer, inputs: dict, gen_kwargs: dict) -> list[Generation]:
    """Run ``model.generate`` on a left-padded batch; decode only the new tokens of each row."""
    inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    out = model.generate(**inputs, **gen_kwargs)
    new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
    eos = stop_ids(model, tokenizer)
    results = []
    for ids in new_tokens:
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        kept = ids if end is None else ids[:end]
        text = tokenizer.decode(kept, skip_special_tokens=True)
        results.append(Generation(text=text, tokens=len(ids) if end is None else end + 1, finished=end is not None))
    return results


def generate_shared(model, tokenizer, inputs: dict, gen_kwargs: dict, shared: SharedPrefix) -> list[Generation]:
    """``generate`` with the batch's common prefix run once (``SharedPrefix``); text-only batches
    whose prompts share at least ``MIN_SHARED_TOKENS`` tokens, else the plain path."""
    if set(inputs) != {"input_ids", "attention_mask"}:
        return generate(model, tokenizer, inputs, gen_kwargs)
    rows = unpadded_rows(inputs["input_ids"], inputs["attention_mask"])
    shared_tokens = common_prefix_length(rows)
    if shared_tokens < MIN_SHARED_TOKENS:
        return generate(model, tokenizer, inputs, gen_kwargs)
    laid = prefix_then_padded(rows, shared_tokens, padding_id(tokenizer, gen_kwargs))
    kwargs = dict(gen_kwargs)  # the cache is ours: generate gets it instead of making one
    static = kwargs.pop("cache_implementation", None) == "static"
    planned = kwargs.pop("max_cache_len", 0)
    static_length = max(planned, static_cache_length([laid["input_ids"].shape[1]], kwargs.get("max_new_tokens", 0))) \
        if static else None
    cache = shared.cache_for(rows[0][:shared_tokens], len(rows), static_length)
    return generate(model, tokenizer, laid, {**kwargs, "past_key_values": cache})


BATCH_OVERHEAD_TOKENS = 120_000
"""A generate call's fixed cost, in padded prompt tokens: a rough weight (H200, Qwen2-VL-7B shapes, 128
new tokens, calls of 180 crops; benchmarks/RESULTS.md). Cutting a pipeline's crops into 4 batches
instead of 2 saved ~250k padded tokens in the same time (that run may have shared the GPU); cutting
PS3-sized crops saved ~36k and cost 3.6 s. At 120k, crops of similar size (300-600 px sides) stay in
one batch, as a run at 100k confirmed, and a call that mixes a few ~1280-token crops into many near
the 256-token floor is cut."""


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None,
                 new_tokens: int = 0, overhead_tokens: float | None = None) -> list[list[int]]:
    """Item indices grouped into generate calls: sorted by ``lengths`` (expected prompt tokens), then cut
    into runs of at most ``batch_size`` items whose padded size, (items) x (longest prompt +
    ``new_tokens``), stays within ``max_batch_tokens``. The budget bounds the KV cache and prefill
    activations of one call: a count alone let 256 crops of up to 1280 vision tokens each fill an H200.
    An item over the budget on its own still gets a batch.

    Among the cuts that respect both limits, the one with the least estimated time: each batch costs
    ``overhead_tokens`` (default ``BATCH_OVERHEAD_TOKENS``) plus its padded size. Filling batches in
    order padded a call's few large crops' batch-mates to their length: on a pipeline's crops (most
    near the 256-token floor, a few near 1280) the KV cache and activations were sized for 1280 tokens
    a row (59 instead of 26 GiB at 180 crops). Padding costs little time next to a batch's own, so
    only such mixes are cut. A very large overhead gives the fewest batches."""
    overhead = BATCH_OVERHEAD_TOKENS if overhead_tokens is None else overhead_tokens
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    span = [lengths[i] + new_tokens for i in order]
    n = len(order)
    # best[j]: least cost of the first j sorted items; cut[j]: where its last batch starts
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for start in range(j - 1, max(0, j - batch_size) - 1, -1):
            rows = j - start
            padded = rows * span[j - 1]  # sorted: the batch's last item is its longest
            if rows > 1 and max_batch_tokens is not None and padded > max_batch_tokens:
                break  # longer runs ending at j only pad more
            cost = best[start] + overhead + padded
            if cost < best[j]:  # ties keep the shorter last batch: fewer items wait behind a long one
                best[j], cut[j] = cost, start
    batches: list[list[int]] = []
    j = n
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]


STATIC_CACHE_STEP = 256  # tokens: static cache lengths are multiples of this


def static_cache_length(lengths: Sequence[int], new_tokens: int) -> int:
    """One static KV cache length for every batch of a call: its longest prompt's expected need,
    rounded up to ``STATIC_CACHE_STEP``. Sized per batch, the cache grew with each (batches go in
    order of length) and every growth recompiled the decoding step; transformers keeps the largest
    length seen, so later calls of similar lengths reuse it. An estimate that falls short costs a
    recompile, never a wrong result (generate takes the larger of the two)."""
    longest = max(lengths, default=0) + new_tokens
    return -(-longest // STATIC_CACHE_STEP) * STATIC_CACHE_STEP


def generate_in_batches(model, tokenizer, items: Sequence[Item], cfg, length: Callable[[Item], int],
                        prepare: Callable[[list[Item]], dict], gen_kwargs: dict,
                        shared: SharedPrefix | None = None, split_prefill: bool = False) -> list[Generation]:
    """One generation per item, in the items' order, in the batches ``plan_batches`` draws from
    ``cfg.batch_size``, ``cfg.max_batch_tokens`` and ``length`` (an item's expected prompt tokens).

    Greedy outputs do not depend on the grouping (left padding is masked). ``prepare`` builds a
    batch's inputs (tokenising, image processing) on this thread: preparing the next batch on a
    second thread was within noise on an H200 at batches of 64-256 (benchmarks/RESULTS.md), where
    the image processing was not what the GPU waited for; at calls of 360 crops a call's time is
    mostly prefill (71%), so no thread was tried again. With ``shared``, a batch's common prompt prefix is computed once
    (``generate_shared``). With ``split_prefill`` (dynamic cache, no ``shared``), a batch's prompts
    are prefilled in groups of similar length and decoded as one batch (``split_prefill.py``)."""
    lengths = [length(item) for item in items]
    results: list[Generation | None] = [None] * len(items)
    new_tokens = gen_kwargs.get("max_new_tokens", cfg.max_new_tokens)
    batches = plan_batches(lengths, cfg.batch_size, cfg.max_batch_tokens, new_tokens)
    if gen_kwargs.get("cache_implementation") == "static":
        gen_kwargs = {**gen_kwargs, "max_cache_len": static_cache_length(lengths, new_tokens)}

    split = split_prefill and shared is None and gen_kwargs.get("cache_implementation") != "static"

    def run(batch: list[int]) -> list[Generation]:
        if split:
            return run_split(batch)
        inputs = prepare([items[i] for i in batch])
        return (generate(model, tokenizer, inputs, gen_kwargs) if shared is None
                else generate_shared(model, tokenizer, inputs, gen_kwargs, shared))

    def run_split(batch: list[int]) -> list[Generation]:
        groups = [[batch[j] for j in group] for group in
                  plan_batches([lengths[i] for i in batch], len(batch), overhead_tokens=PREFILL_GROUP_OVERHEAD_TOKENS)]
        generations = generate_split_prefill(
            model, lambda inputs, kwargs: generate(model, tokenizer, inputs, kwargs),
            [prepare([items[i] for i in group]) for group in groups], gen_kwargs, padding_id(tokenizer, gen_kwargs))
        by_item = dict(zip([i for group in groups for i in group], generations, strict=True))
        return [by_item[i] for i in batch]

    for batch in batches:
        for i, generation in zip(batch, halving_on_oom(run, batch)):
            results[i] = generation
    if cfg.num_gpus < 1:
        release_cached_gpu_memory()
    return results


def release_cached_gpu_memory() -> None:
    """Give PyTorch's cached GPU blocks back to the device. An actor on a fraction of a GPU shares it
    with other processes, whose allocators cannot use what this one keeps cached: over 1,000 images
    the language-model actors held 30-63 GiB each while a caption call allocates about 26 GiB (H200, calls of varied
    shapes leave the cache fragmented), and the GPU's memory was full. Once per call, after its last
    batch, costs the next call's first allocations; a call decodes for seconds."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def halving_on_oom(run: Callable[[list[int]], list[Generation]], batch: list[int]) -> list[Generation]:
    """``run(batch)``; a batch that runs out of GPU memory runs again as two halves (greedy text does
    not depend on the grouping). Stages share a GPU by fractional ``num_gpus``, so the memory a
    batch finds free depends on what the other actors hold at that moment: a batch that does not
    fit is split rather than failing the images of the call. One item that does not fit raises."""
    try:
        return run(batch)
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1:
            raise
    # out of the except block: the failed attempt's tensors (held by its traceback) are freed
    release_cached_gpu_memory()
    log.warning("out of GPU memory in a generate call of %d prompts: running it as two of %d and %d",
                len(batch), len(batch) // 2, len(batch) - len(batch) // 2)
    half = len(batch) // 2
    return halving_on_oom(run, batch[:half]) + halving_on_oom(run, batch[half:])
