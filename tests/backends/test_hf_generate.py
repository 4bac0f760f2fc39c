"""Batches of generate calls: by length, by count and by a padded-token budget."""

import random
from types import SimpleNamespace

import pytest
import torch

from curate.backends import hf_generate
from curate.backends.hf_generate import compiles_decoding, plan_batches, static_cache_length
from curate.backends.llm_hf import HfQuestionWriter
from curate.backends.vlm_hf import HfVlmCaptioner
from curate.config import RetargetConfig, VlmConfig


@pytest.mark.parametrize("seed", range(5))
def test_every_item_once_within_count_and_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(10, 1400) for _ in range(300)]
    batches = plan_batches(lengths, batch_size=64, max_batch_tokens=40_000, new_tokens=128)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * (max(lengths[i] for i in batch) + 128) <= 40_000
    # sorted by length across batches: similar prompts share a batch
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_budget_cuts_long_prompts_into_smaller_batches():
    lengths = [100] * 10 + [1000] * 10
    batches = plan_batches(lengths, batch_size=256, max_batch_tokens=4_400, new_tokens=100)
    assert [len(b) for b in batches] == [10, 4, 4, 2]  # 10 x 200 fits; 4 x 1100 fits, 5 x 1100 does not


def test_an_item_over_the_budget_alone_still_runs():
    assert plan_batches([5000, 10], batch_size=8, max_batch_tokens=1000) == [[1], [0]]


def test_no_budget_is_count_only():
    assert [len(b) for b in plan_batches([7] * 10, batch_size=4, max_batch_tokens=None)] == [4, 4, 2]


def _cost(lengths, batches, new_tokens, overhead=hf_generate.BATCH_OVERHEAD_TOKENS):
    return sum(overhead + len(b) * (max(lengths[i] for i in b) + new_tokens) for b in batches)


def _filled_in_order(lengths, batch_size, budget, new_tokens):
    """The planner before it weighed padding: sorted, each batch filled until a limit."""
    batches, current = [], []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and (len(current) == batch_size or (len(current) + 1) * (lengths[i] + new_tokens) > budget):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current]


def test_a_few_long_crops_do_not_pad_the_short_ones():
    # a caption call as the pipeline makes it: most crops at the 256-token floor, a few near the ceiling
    lengths = [280] * 160 + [1280] * 20
    batches = plan_batches(lengths, batch_size=256, max_batch_tokens=262_144, new_tokens=128)
    assert [sorted({lengths[i] for i in b}) for b in batches] == [[280], [1280]]
    filled = _filled_in_order(lengths, 256, 262_144, 128)
    assert len(filled) == 1  # one batch of 180, every crop padded to 1280
    assert _cost(lengths, batches, 128) < _cost(lengths, filled, 128)
    # the largest batch's padded size, what sizes the KV cache: 160 x 408 and 20 x 1408 against 180 x 1408
    assert max(len(b) * (max(lengths[i] for i in b) + 128) for b in batches) < 0.3 * 180 * 1408


def test_crops_of_similar_sizes_stay_in_one_batch():
    # PS3-sized crops (300-600 px sides): splitting saves less padding than a batch costs
    rng = random.Random(3)
    lengths = [rng.randint(330, 593) for _ in range(180)]
    assert [len(b) for b in plan_batches(lengths, 256, 262_144, new_tokens=128)] == [180]


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_is_the_cheapest_cut_of_the_sorted_items(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([256, 300, 700, 1280]) + rng.randint(0, 40) for _ in range(rng.randint(1, 9))]
    batch_size, budget, overhead = rng.randint(1, 6), rng.choice([None, 4_000, 6_000]), rng.choice([0, 500, 5_000])
    plan = plan_batches(lengths, batch_size, budget, new_tokens=64, overhead_tokens=overhead)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = None
    for mask in range(2 ** (len(order) - 1)):  # every way to cut the sorted items into runs
        cuts = [0] + [k + 1 for k in range(len(order) - 1) if mask >> k & 1] + [len(order)]
        runs = [order[a:b] for a, b in zip(cuts, cuts[1:])]
        if all(len(r) <= batch_size and (len(r) == 1 or budget is None
                                         or len(r) * (max(lengths[i] for i in r) + 64) <= budget) for r in runs):
            cost = _cost(lengths, runs, 64, overhead)
            best = cost if best is None else min(best, cost)
    assert _cost(lengths, plan, 64, overhead) == best
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))


def test_a_large_overhead_gives_the_fewest_batches():
    rng = random.Random(7)
    lengths = [rng.randint(200, 1300) for _ in range(500)]
    plan = plan_batches(lengths, 128, 131_072, new_tokens=128, overhead_tokens=1e12)
    assert len(plan) == len(_filled_in_order(lengths, 128, 131_072, 128))


def test_one_static_cache_length_covers_every_batch_of_a_call():
    assert static_cache_length([10, 700, 300], 128) == 1024  # 700 + 128, rounded up to 256s
    assert static_cache_length([100], 156) == 256  # a multiple stays as it is


@pytest.fixture
def cudnn_attention_restored():
    """The cuDNN SDPA switch is process-wide: put it back for the tests that follow."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


@pytest.mark.parametrize("backend", ["captions", "questions"])
def test_a_generation_backend_keeps_attention_off_the_per_shape_cudnn_kernel(
        backend, cudnn_attention_restored, tiny_qwen2_vl_dir, tiny_llama_dir):
    if backend == "captions":
        HfVlmCaptioner(VlmConfig(backend="hf", model=str(tiny_qwen2_vl_dir), dtype="fp32"))
    else:
        HfQuestionWriter(RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32"))
    assert not torch.backends.cuda.cudnn_sdp_enabled()


def test_a_batch_out_of_gpu_memory_runs_again_in_halves(monkeypatch, tiny_llama_dir, caplog):
    writer = HfQuestionWriter(RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32",
                                             max_new_tokens=5, batch_size=8), share_prefix=False)
    captions = [f"Region {i}: a red door beside {'a window ' * i}." for i in range(6)]
    whole = writer.ask(captions)
    real_generate, rows_run = hf_generate.generate, []

    def generate_fitting_two_rows(model, tokenizer, inputs, gen_kwargs):
        if inputs["input_ids"].shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        rows_run.append(inputs["input_ids"].shape[0])
        return real_generate(model, tokenizer, inputs, gen_kwargs)

    monkeypatch.setattr(hf_generate, "generate", generate_fitting_two_rows)
    halved = writer.ask(captions)
    assert [g.text for g in halved] == [g.text for g in whole]  # every item, in order, the same text
    assert sum(rows_run) == len(captions) and max(rows_run) <= 2
    assert "out of GPU memory in a generate call of 6 prompts" in caplog.text


def test_one_item_out_of_gpu_memory_still_raises():
    def run(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        hf_generate.halving_on_oom(run, [0])


@pytest.mark.parametrize("num_gpus, released", [(0.2, True), (1.0, False)])
def test_an_actor_on_a_shared_gpu_gives_its_cached_memory_back_after_each_call(
        monkeypatch, tiny_llama_dir, num_gpus, released):
    writer = HfQuestionWriter(RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32",
                                             max_new_tokens=3, num_gpus=num_gpus))
    calls = []
    monkeypatch.setattr(hf_generate, "release_cached_gpu_memory", lambda: calls.append(True))
    writer.ask(["A blue door.", "Text: EXIT"])
    assert calls == ([True] if released else [])


def test_decoding_compiles_only_with_a_static_cache_and_compile_on_a_gpu():
    """The backends warm up (compile at load time) exactly when generate would compile."""
    gpu, cpu = SimpleNamespace(device=torch.device("cuda")), SimpleNamespace(device=torch.device("cpu"))
    static = {"cache_implementation": "static", "disable_compile": False}
    assert compiles_decoding(gpu, static)
    assert not compiles_decoding(cpu, static)
    assert not compiles_decoding(gpu, {**static, "disable_compile": True})
    assert not compiles_decoding(gpu, {"cache_implementation": None})
