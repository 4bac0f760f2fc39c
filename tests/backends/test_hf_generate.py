"""Batches of generate calls: by length, by count and by a padded-token budget."""

import random

import pytest
import torch

from curate.backends import hf_generate
from curate.backends.hf_generate import plan_batches, static_cache_length
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
