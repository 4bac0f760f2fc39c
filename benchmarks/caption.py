"""MLLM captioning and LLM question retargeting throughput with the transformers (hf) backend.

    python benchmarks/caption.py --vlm 7b --llm 8b --crops 512 --batch-sizes 64,128,256 --new-tokens 128
    python benchmarks/caption.py --vlm tiny --llm tiny --crops 6 --batch-sizes 3 --new-tokens 8   # CPU smoke

Weights are random (no checkpoint can be downloaded here) with Qwen2-VL-7B-Instruct's and
Llama-3.1-8B-Instruct's shapes, so every generation runs to exactly --new-tokens (min_new_tokens is
set): timings measure the real code path (crop preparation, Qwen2-VL image processing, batched
prefill and decode) at a fixed output length. Crops come from real photos (scikit-image's samples)
upscaled to 2K with PS3-sized boxes (Table 9: ~300-600 px sides). Reports crops/s, generated tokens/s
and peak GPU memory per batch size and path: ``serial`` is the path before batches were sorted by
length (inputs in request order), ``pipelined`` the backends' path now (sorted by length; its
2026-12-03 H200 row also prepared the next batch on a thread, since removed); both in the same run.
``--llm-prefixes shared,plain`` times the question writer with and without its shared prompt prefix
(the system prompt and instruction run once per batch); ``--attentions grouped,sdpa`` both with and
without the grouped decoding attention (curate/backends/grouped_attention.py). The vLLM backend is not measured here
(see RESULTS.md). ``--crops-from CORPUS`` takes the crops from a curate output instead (its images and
the boxes the pipeline selected and captioned with the MLLM), the crop sizes the pipeline's caption stage
sees; ``--max-batch-tokens`` times several token budgets per generate call, and each row says how the
crops were split into generate calls and how much of the time went to preparing their inputs.
Modes ``prefill`` (one new token a crop) and ``phases`` (the vision tower, the prefill and the decoding
steps timed one forward at a time) say where a call's time goes; each row also carries the GPU's busy
share (NVML) and, with ``--kv-caches static``, the warm-up's compile time and the graphs compiled per pass.
``--cudnn-attention`` lets SDPA use its cuDNN kernel again (the backends switch it off: it plans per new
shape), to compare a first pass over new shapes with and without it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_sampling import GpuSampler  # noqa: E402
from curate.backends import hf_generate  # noqa: E402
from curate.backends.hf_generate import generate, plan_batches  # noqa: E402
from curate.backends.llm_hf import HfQuestionWriter  # noqa: E402
from curate.backends.vlm_hf import HfVlmCaptioner  # noqa: E402
from curate.config import RetargetConfig, VlmConfig  # noqa: E402
from curate.testing.random_models import random_llama, random_qwen2_vl  # noqa: E402


def photo_requests(n: int, seed: int = 0) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    from skimage import data

    photos = [Image.fromarray(f()).convert("RGB").resize((2048, 1536), Image.Resampling.BICUBIC)
              for f in (data.astronaut, data.coffee, data.chelsea, data.rocket)]
    return boxes_on(photos, n, seed)


def boxes_on(photos: list[Image.Image], n: int, seed: int) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 600, size=2))
        x, y = int(rng.integers(0, 2048 - w)), int(rng.integers(0, 1536 - h))
        out.append((photos[i % len(photos)], (x, y, x + w, y + h)))
    return out


def corpus_requests(corpus: Path, n: int) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """The first ``n`` (image, box) pairs of a curate output's natural images (the boxes its caption
    stage gave the MLLM, whatever became of the text), in shard order."""
    import io

    from curate.io.layout import OutputLayout
    from curate.io.reader import shard_samples

    out = []
    for shard in sorted(OutputLayout(corpus).shards_dir.glob("*.tar")):
        for _key, parts in shard_samples(shard):
            record = json.loads(parts["json"])
            if record["kind"] != "natural" or not record["regions"]:
                continue
            boxes = [r["box"] for r in record["regions"]]
            image = Image.open(io.BytesIO(parts[record["image_ext"]])).convert("RGB")
            out += [(image, tuple(box)) for box in boxes]
            if len(out) >= n:
                return out[:n]
    if not out:
        raise SystemExit(f"{corpus}: no regions on natural images")
    return out


def timed(fn, device) -> tuple[list, float, float | None]:
    """(result, seconds, peak GPU GiB) of ``fn()``, synchronised, peak memory counted from zero."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
    return result, time.perf_counter() - start, peak


class PhaseTimer:
    """Seconds in the vision tower, in the language model's prefill (forwards of several tokens) and in
    its decoding steps (one token a row), each forward timed with the device synchronised (generate
    synchronises every step anyway). Installed on the module instances for the ``phases`` mode only:
    a compiled decoding step would break its graph at the synchronisation."""

    def __init__(self, model, device):
        self.device, self.seconds = device, {"vision": 0.0, "prefill": 0.0, "decode": 0.0}
        self.modules = [(model.model.visual, self._vision), (model.model.language_model, self._language)]

    def _vision(self, args, kwargs) -> str:
        return "vision"

    def _language(self, args, kwargs) -> str:
        tokens = kwargs.get("inputs_embeds")
        tokens = kwargs.get("input_ids") if tokens is None else tokens
        return "decode" if tokens is not None and tokens.shape[1] == 1 else "prefill"

    def _wrap(self, forward, phase_of):
        def timed_forward(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            self._sync()
            self.seconds[phase_of(args, kwargs)] += time.perf_counter() - start
            return out
        return timed_forward

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __enter__(self):
        for module, phase_of in self.modules:
            module.forward = self._wrap(module.forward, phase_of)  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc) -> None:
        for module, _ in self.modules:
            del module.forward

    def report(self, total_s: float, prepare_s: float) -> dict:
        """The phases' seconds, with the image processor's and the rest of ``total_s`` (the lm_head,
        generate's own loop, decoding tokens to text)."""
        rest = total_s - prepare_s - sum(self.seconds.values())
        return {**{k: round(v, 2) for k, v in self.seconds.items()}, "prepare": round(prepare_s, 2),
                "rest": round(rest, 2)}


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (a recompile for a new shape adds one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def serial(backend, tokenizer, items: list, batch_size: int, extra: dict) -> list:
    """The backends' loop before generate_in_batches: request order, prepare then generate."""
    results = []
    for start in range(0, len(items), batch_size):
        inputs = backend._inputs(items[start:start + batch_size])
        results += generate(backend.model, tokenizer, inputs, {**backend.gen_kwargs, **extra})
    return results


def set_attention(model, attention: str) -> None:
    """``grouped``: the backends' default (grouped decoding attention, set by their constructors);
    ``sdpa``: transformers' own SDPA path, with its per-head KV copies. Compiled steps are dropped so
    that neither is measured with the other's graph."""
    torch._dynamo.reset()
    if hasattr(model, "_compiled_call"):
        del model._compiled_call  # generate compiles again when it is missing
    if attention == "sdpa":
        text = "text_config" in getattr(model.config, "sub_configs", {})
        model.set_attn_implementation({"text_config": "sdpa"} if text else "sdpa")


def bench_vlm(size: str, n_crops: int, batch_sizes: list[int], new_tokens: int, device,
              modes: list[str], kv_caches: tuple[str, ...] = ("dynamic",),
              attentions: tuple[str, ...] = ("grouped",), corpus: Path | None = None,
              budgets: tuple[int | None, ...] = (262144,), call_crops: int = 0,
              cudnn_attention: bool = False, overheads: tuple[float, ...] = (hf_generate.BATCH_OVERHEAD_TOKENS,),
              prefills: tuple[str, ...] = ("padded",)) -> list[dict]:
    """``call_crops``: hand the crops to the captioner that many at a time, as the caption stage's
    calls do (64 images, about 180 crops); 0 gives it all of them at once. ``prefills``: ``padded``
    (one prefill per generate batch) and/or ``split`` (groups of similar length, one decode loop)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    model, processor = random_qwen2_vl(size, device=str(device), dtype=dtype)
    print(f"built random Qwen2-VL-{size} on {device} in {time.perf_counter() - t0:.1f}s "
          f"({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params)", flush=True)
    requests = photo_requests(n_crops) if corpus is None else corpus_requests(corpus, n_crops)
    rows = []
    padded_texts: dict[tuple, list[str]] = {}  # each setting's texts with one padded prefill per batch
    for bs, budget, kv_cache, attention, overhead, prefill in (
            (b, t, k, a, o, p) for b in batch_sizes for t in budgets for k in kv_caches for a in attentions
            for o in overheads for p in prefills):
        hf_generate.BATCH_OVERHEAD_TOKENS = overhead  # the planner's weight of a batch against its padding
        cfg = VlmConfig(backend="hf", model=f"random-qwen2-vl-{size}", max_new_tokens=new_tokens, batch_size=bs,
                        max_batch_tokens=budget, kv_cache=kv_cache,
                        **({} if size != "tiny" else {"min_pixels": 3136, "max_pixels": 12544}))
        cap = HfVlmCaptioner(cfg, model=model, processor=processor, grouped_decode=attention == "grouped")
        cap.split_prefill = prefill == "split"
        torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)  # the captioner switched it off
        # per timed run: the image processor's seconds, and what the model received (images, tokens)
        seen = {"prepare_s": 0.0, "images": 0, "vision_tokens": 0}
        build_inputs = cap._inputs

        def timed_inputs(batch, build_inputs=build_inputs, seen=seen):
            start = time.perf_counter()
            inputs = build_inputs(batch)
            seen["prepare_s"] += time.perf_counter() - start
            # what the model received (2x2 patches per LLM token), not what the crops' pixels promise
            seen["images"] += len(inputs["image_grid_thw"])
            seen["vision_tokens"] += int(inputs["image_grid_thw"].prod(-1).sum()) // 4
            return inputs

        cap._inputs = timed_inputs  # the image processor's share of a run
        set_attention(model, attention)
        from curate.ops.prompts import crop_images

        crops = [crop_images(cfg, im, box) for im, box in requests]
        estimated = [cap._crop_tokens(c) for c in crops]
        print(f"crops' expected prompt tokens: p10 {np.percentile(estimated, 10):.0f}, median "
              f"{np.median(estimated):.0f}, p90 {np.percentile(estimated, 90):.0f}, max {max(estimated)}", flush=True)
        extra = {"min_new_tokens": new_tokens}
        compiled_before = compiled_graphs()
        _, warm_up_s, _ = timed(cap.warm_up, device)  # what a stage actor does after loading: compiles, if static
        _, first_batch_s, _ = timed(lambda: cap.generate_crops(crops[:bs], **extra), device)  # warm-up
        print(f"warm-up {warm_up_s:.1f}s, first batch {first_batch_s:.1f}s, graphs compiled "
              f"{compiled_graphs() - compiled_before}", flush=True)
        per_call = call_crops or max(1, len(crops))
        starts = range(0, len(crops), per_call)
        calls = [crops[i:i + per_call] for i in starts]
        runs = {"serial": lambda: serial(cap, processor.tokenizer, crops, bs, extra),
                "pipelined": lambda: [g for call in calls for g in cap.generate_crops(call, **extra)]}
        runs["again"] = runs["pipelined"]  # every batch shape seen: the steady state of a compiled cache
        # one new token a crop: the image processor, vision tower and prefill, without the decode loop
        runs["prefill"] = lambda: [g for call in calls for g in cap.generate_crops(call, max_new_tokens=1,
                                                                                  min_new_tokens=1)]
        runs["phases"] = runs["pipelined"]  # again, with each forward timed (PhaseTimer)
        call_tokens = [estimated[i:i + per_call] for i in starts]
        planned = [(lens, batch) for lens in call_tokens for batch in plan_batches(lens, bs, budget, new_tokens)]
        generate_calls = [len(batch) for _, batch in planned]
        # prompt tokens the model computes with padding, over those it needs (vision tokens estimated)
        padding = (sum(len(b) * max(lens[i] for i in b) for lens, b in planned)
                   / max(1, sum(lens[i] for lens, b in planned for i in b)))
        for mode in modes:
            seen.update(prepare_s=0.0, images=0, vision_tokens=0)
            if mode == "phases" and kv_cache == "static":
                continue  # the timers would break the compiled decoding step's graph
            compiled_before = compiled_graphs()
            phases = PhaseTimer(model, device) if mode == "phases" else contextlib.nullcontext()
            with GpuSampler(every=0.1) as gpu, phases:
                gens, seconds, peak = timed(runs[mode], device)
            tokens = sum(g.tokens for g in gens)
            # greedy text against the padded prefill's in the same setting: bf16 sums in other groupings
            # can turn a near-tie of random weights' logits (on the CPU in float32 they are equal: tests)
            setting = (bs, budget, kv_cache, attention, overhead, mode)
            texts = [g.text for g in gens]
            if prefill == "padded":
                padded_texts[setting] = texts
            same = padded_texts.get(setting)
            vision_tokens = seen["vision_tokens"] / max(1, seen["images"])
            row = dict(backend="hf", model=f"qwen2-vl-{size}", path=mode, batch_size=bs, kv_cache=kv_cache,
                       attention=attention, prefill=prefill,
                       crops=len(crops),
                       seconds=round(seconds, 3), crops_per_s=round(len(crops) / seconds, 3),
                       generated_tokens_per_s=round(tokens / seconds, 1), new_tokens=new_tokens,
                       mean_vision_tokens=round(vision_tokens, 1), peak_gpu_gib=peak,
                       max_batch_tokens=budget, call_crops=call_crops or len(crops),
                       rows_per_generate=generate_calls if mode != "serial" else None,
                       batch_overhead_tokens=overhead, padded_over_needed=round(padding, 3),
                       prepare_s=round(seen["prepare_s"], 3), warm_up_s=round(warm_up_s, 1),
                       first_batch_s=round(first_batch_s, 1), graphs_compiled=compiled_graphs() - compiled_before,
                       gpu_busy_share=gpu.summary().get("busy_share_whole_run"),
                       same_text_as_padded=(round(sum(a == b for a, b in zip(texts, same)) / len(texts), 3)
                                            if same and prefill != "padded" else None),
                       phase_s=phases.report(seconds, seen["prepare_s"]) if mode == "phases" else None)
            print(json.dumps(row), flush=True)
            rows.append(row)
    del model
    return rows


def bench_llm(size: str, n_prompts: int, batch_sizes: list[int], new_tokens: int, device,
              modes: list[str], kv_caches: tuple[str, ...] = ("dynamic",),
              prefixes: tuple[str, ...] = ("shared",), attentions: tuple[str, ...] = ("grouped",),
              cudnn_attention: bool = False) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = random_llama(size, device=str(device), dtype=dtype)
    rng = np.random.default_rng(0)
    phrases = ["a red bus with the sign OPEN 24 HOURS", "beside a brick wall", "two people waiting",
               "a lamp post", "a blue bicycle", "under a striped awning", "with a handwritten menu board"]
    captions = [f"Region {i}: " + ", ".join(rng.choice(phrases, size=int(rng.integers(2, 7)))) + "."
                for i in range(n_prompts)]  # captions of several lengths, as the stage sees them
    rows = []
    for bs, kv_cache, prefix, attention in ((b, k, p, a) for b in batch_sizes for k in kv_caches for p in prefixes
                                            for a in attentions):
        cfg = RetargetConfig(backend="hf", model=f"random-llama-{size}", max_new_tokens=new_tokens, batch_size=bs,
                             kv_cache=kv_cache)
        writer = HfQuestionWriter(cfg, model=model, tokenizer=tokenizer, share_prefix=prefix == "shared",
                                  grouped_decode=attention == "grouped")
        torch.backends.cuda.enable_cudnn_sdp(cudnn_attention)  # the writer switched it off
        set_attention(model, attention)
        extra = {"min_new_tokens": new_tokens}
        writer.ask(captions[:bs], **extra)  # warm-up
        runs = {"serial": lambda: serial(writer, tokenizer, captions, bs, extra),
                "pipelined": lambda: writer.ask(captions, **extra)}
        runs["again"] = runs["pipelined"]
        for mode in modes:
            gens, seconds, peak = timed(runs[mode], device)
            row = dict(backend="hf", model=f"llama-{size}", path=mode, batch_size=bs, kv_cache=kv_cache,
                       prefix=prefix, attention=attention, prompts=len(captions),
                       seconds=round(seconds, 3), prompts_per_s=round(len(captions) / seconds, 3),
                       generated_tokens_per_s=round(sum(g.tokens for g in gens) / seconds, 1),
                       new_tokens=new_tokens, peak_gpu_gib=peak)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vlm", default="7b", choices=["7b", "tiny", "none"])
    parser.add_argument("--llm", default="8b", choices=["8b", "tiny", "none"])
    parser.add_argument("--crops", type=int, default=96)
    parser.add_argument("--batch-sizes", default="16,48")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--llm-new-tokens", type=int, default=48)
    parser.add_argument("--modes", default="serial,pipelined",
                        help="paths to time: serial, pipelined, again (pipelined once more: shapes seen, compiled), "
                        "prefill (pipelined with one new token a crop: everything but the decode loop), "
                        "phases (pipelined with the vision tower, prefill and decoding steps timed; dynamic cache)")
    parser.add_argument("--llm-prompts", type=int, default=0, help="prompts for the LLM (default: --crops)")
    parser.add_argument("--llm-batch-sizes", default="", help="batch sizes for the LLM (default: --batch-sizes)")
    parser.add_argument("--kv-caches", default="dynamic", help="comma list: dynamic, static (compiled decoding)")
    parser.add_argument("--llm-prefixes", default="shared",
                        help="comma list: shared (the prompts' common start run once per batch), plain")
    parser.add_argument("--attentions", default="grouped",
                        help="comma list: grouped (decoding attention without per-head KV copies), sdpa")
    parser.add_argument("--crops-from", type=Path, metavar="CORPUS",
                        help="crops from a curate output's natural images and selected boxes (the pipeline's sizes)")
    parser.add_argument("--max-batch-tokens", default="262144",
                        help="comma list of the captioner's token budgets per generate call ('none': no budget)")
    parser.add_argument("--call-crops", type=int, default=0,
                        help="crops per captioner call, as the caption stage hands them over (0: all at once)")
    parser.add_argument("--batch-overheads", default=str(hf_generate.BATCH_OVERHEAD_TOKENS),
                        help="comma list of the batch planner's cost of one generate call in padded tokens "
                             "('fill': batches filled in sorted order up to the limits, the planner before it "
                             "weighed padding)")
    parser.add_argument("--prefills", default="padded",
                        help="comma list: padded (one prefill per generate batch), split (prompts prefilled in "
                             "groups of similar length, decoded as one batch; curate/backends/split_prefill.py)")
    parser.add_argument("--cudnn-attention", action="store_true",
                        help="let PyTorch's SDPA use its cuDNN kernel (which plans per new shape), as the backends "
                             "did before they switched it off")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = args.modes.split(",")
    kv_caches = tuple(args.kv_caches.split(","))
    hardware = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(f"hardware: {hardware}; torch {torch.__version__}; cuDNN attention: {args.cudnn_attention}", flush=True)
    results = {"hardware": hardware, "torch": torch.__version__, "vlm": [], "llm": [], "vllm": None}
    if device.type == "cuda":
        # memory other processes hold when this one starts (plus this one's context): a run left over on
        # the GPU shares it with what is timed here
        free, total = torch.cuda.mem_get_info(device)
        results["gpu_in_use_gib_at_start"] = round((total - free) / 2**30, 2)
        print(f"GPU memory in use at start: {results['gpu_in_use_gib_at_start']} GiB", flush=True)
    overheads = tuple(1e12 if o == "fill" else float(o) for o in args.batch_overheads.split(","))
    if args.vlm != "none":
        budgets = tuple(None if b == "none" else int(b) for b in args.max_batch_tokens.split(","))
        results["vlm"] = bench_vlm(args.vlm, args.crops, batch_sizes, args.new_tokens, device, modes, kv_caches,
                                   tuple(args.attentions.split(",")), args.crops_from, budgets, args.call_crops,
                                   args.cudnn_attention, overheads, tuple(args.prefills.split(",")))
    if args.llm != "none":
        llm_batch_sizes = [int(b) for b in args.llm_batch_sizes.split(",")] if args.llm_batch_sizes else batch_sizes
        results["llm"] = bench_llm(args.llm, args.llm_prompts or args.crops, llm_batch_sizes, args.llm_new_tokens,
                                   device, modes, kv_caches, tuple(args.llm_prefixes.split(",")),
                                   tuple(args.attentions.split(",")), args.cudnn_attention)
    results["vllm"] = ("skipped: vllm is not installed on this machine" if importlib.util.find_spec("vllm") is None
                       else "installed, not measured by this script (run the pipeline with backend vllm)")
    print("vllm:", results["vllm"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
