"""Request rows around ray.data.llm: explode, answer (simulated with fixed strings), reassemble."""

import json
import random

import pytest

from curate.backends.llm_vllm import Reassembler, engine_kwargs, record_answer, sampling_params, to_request
from curate.config import RetargetConfig, VlmConfig
from curate.stages.caption import caption_requests, merge_captions
from tests.conftest import noise_image, png_bytes

CAP = VlmConfig(backend="vllm", model="Qwen/Qwen2-VL-7B-Instruct", max_new_tokens=32, min_pixels=28 * 28 * 4,
                max_pixels=28 * 28 * 16)


def image_row(uri, n_regions, kind="natural", status="ok"):
    regs = [{"box": [10 * i, 10 * i, 10 * i + 200, 10 * i + 150], "box_norm": [0, 0, 0, 0], "score": 1.0,
             "n_masks": 3, "mask_area_frac": 0.1} for i in range(n_regions)]
    return {"uri": uri, "status": status, "kind": kind, "regions": json.dumps(regs),
            "image": png_bytes(noise_image(400, 300)), "models": "{}", "events": "{}"}


def answered(request, text, tokens):
    """What ray.data.llm hands the postprocess function: our columns plus the engine's output."""
    return record_answer({**to_request(request), "generated_text": text, "num_generated_tokens": tokens})


def test_caption_requests_carry_one_image_each_and_the_row_once():
    reqs = caption_requests(image_row("a", 3), CAP)
    assert len(reqs) == 3
    msgs = json.loads(reqs[1]["request_messages"])
    assert msgs[0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert msgs[0]["content"][1]["text"] == CAP.prompt
    assert [r["payload"] is not None for r in reqs] == [True, False, False]
    assert to_request(reqs[0])["sampling_params"] == {"max_tokens": 32, "temperature": 0.0}


def test_documents_quarantined_and_empty_rows_ride_as_carriers():
    for row in (image_row("d", 2, kind="document"), image_row("q", 0), image_row("x", 2, status="quarantined")):
        (req,) = caption_requests(row, CAP)
        assert req["request_total"] == 0


def test_reassembly_in_any_order_restores_every_image_once():
    rows = [image_row(f"img{i}", i % 5) for i in range(12)] + [image_row("doc", 2, kind="document")]
    requests = [r for row in rows for r in caption_requests(row, CAP)]
    random.Random(0).shuffle(requests)
    texts = {0: "A small red kite above the trees.", 1: "The image shows a bench under a lamp.",
             2: "I'm sorry, I can't see that.", 3: "Words words words words words words words words words words"}
    reassembler = Reassembler(lambda row, answers: merge_captions(row, [a[0] for a in answers], CAP))
    done = []
    for req in requests:
        out = reassembler.add(answered(req, texts[req["request_index"]], 32 if req["request_index"] == 3 else 9))
        if out is not None:
            done.append(out)
    assert reassembler.incomplete() == []
    assert sorted(r["uri"] for r in done) == sorted(r["uri"] for r in rows)
    by_uri = {r["uri"]: json.loads(r["regions"]) for r in done}
    assert by_uri["img3"][0]["caption"] == "A small red kite above the trees."
    assert by_uri["img3"][1]["caption"] == "A bench under a lamp."  # opener stripped
    assert "refusal" in by_uri["img3"][2]["caption_skipped"]
    assert "(empty)" in by_uri["img4"][3]["caption_skipped"]  # unfinished, trimmed to nothing
    assert all("caption" not in r for r in by_uri["doc"])  # documents are OCR'd elsewhere
    events = json.loads(next(r for r in done if r["uri"] == "img3")["events"])
    assert events["caption.crops"] == 3 and events["caption.generated_tokens"] == 27


def test_engine_kwargs_limit_images_and_pass_the_pixel_budget():
    kw = engine_kwargs(CAP, images_per_prompt=1)
    assert kw["limit_mm_per_prompt"] == {"image": 1} and kw["dtype"] == "bfloat16"
    assert kw["mm_processor_kwargs"] == {"min_pixels": CAP.min_pixels, "max_pixels": CAP.max_pixels}
    assert "limit_mm_per_prompt" not in engine_kwargs(RetargetConfig(backend="vllm", model="m"))
    assert sampling_params(VlmConfig(backend="vllm", model="m", temperature=0.7, top_p=0.9)) == {
        "max_tokens": 256, "temperature": 0.7, "top_p": 0.9}


def ray_data_llm_importable() -> bool:
    try:
        import ray.data.llm  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not ray_data_llm_importable(), reason="ray.data.llm needs aiohttp (dev extra)")
def test_processor_config_and_processor_are_built_by_ray_data_llm(tiny_qwen2_vl_dir):
    """Config validation and stage construction need no vLLM; running the engine does (GPU + vllm)."""
    import ray

    from curate.backends.llm_vllm import build_processor, processor_config

    config = processor_config(CAP, multimodal=True)
    assert config.model_source == CAP.model
    assert config.engine_kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert config.batch_size == CAP.batch_size
    started = not ray.is_initialized()
    if started:  # build_processor calls ray.init(); keep it private and on loopback
        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=1, include_dashboard=False,
                 log_to_driver=False)
    try:
        local = CAP.model_copy(update={"model": str(tiny_qwen2_vl_dir)})
        stages = [type(s).__name__ for s in build_processor(local, multimodal=True).stages.values()]
        assert stages == ["PrepareMultimodalStage", "ChatTemplateStage", "TokenizeStage", "vLLMEngineStage",
                          "DetokenizeStage"]
        text_stages = [type(s).__name__ for s in build_processor(
            RetargetConfig(backend="vllm", model=str(tiny_qwen2_vl_dir)), multimodal=False).stages.values()]
        assert "PrepareMultimodalStage" not in text_stages and "vLLMEngineStage" in text_stages
    finally:
        if started:
            ray.shutdown()
