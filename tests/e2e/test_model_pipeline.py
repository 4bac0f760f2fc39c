"""The hf caption and retarget backends inside the Ray pipeline, with tiny random models.

Documents get real RapidOCR captions, which the tiny Llama turns into (noise) questions that the
validation rules must reject with reasons; natural crops go through the tiny Qwen2-VL, whose noise
the hygiene rules must reject or keep, but never leave unexplained. Only accounting is asserted.
"""

from __future__ import annotations

import json

import pytest

from curate.config import load_config
from curate.pipeline import masks_pace, plan_actor_pools, run_pipeline, stage_plan
from tests.e2e.test_local_pipeline import pipeline_yaml, records

# whole pipelines through Ray (or subprocesses): minutes on two cores
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_corpus(tmp_path_factory, sample_dir, tiny_qwen2_vl_dir, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("models")
    out = tmp / "out"
    path = pipeline_yaml(tmp, [{"type": "dir", "path": str(sample_dir)}], out)
    cfg = load_config(path, [
        "caption.natural={backend: hf, model: %s, dtype: fp32, max_new_tokens: 8, batch_size: 4, "
        "min_pixels: 3136, max_pixels: 12544}" % tiny_qwen2_vl_dir,
        "retarget={backend: hf, model: %s, dtype: fp32, max_new_tokens: 8}" % tiny_llama_dir,
    ])
    return out, run_pipeline(cfg)


def test_every_region_is_captioned_or_explained(model_corpus):
    out, result = model_corpus
    assert result.read == result.written + result.quarantined == 6
    recs = records(out)
    natural = [r for rec in recs if rec["kind"] == "natural" for r in rec["regions"]]
    assert natural, "the sample set has natural images with regions"
    for region in natural:
        assert ("caption" in region) != ("caption_skipped" in region)
        if "caption" in region:
            assert region["caption_model"].startswith("hf:") and region["caption_source"] == "mllm"
    assert all(rec["pipeline"]["models"]["caption.natural"].startswith("hf:")
               for rec in recs if rec["kind"] == "natural" and rec["regions"])


def test_every_captioned_region_was_asked_and_answered_or_explained(model_corpus):
    out, _ = model_corpus
    captioned = [r for rec in records(out) for r in rec["regions"] if r.get("caption")]
    assert captioned, "documents carry real OCR captions"
    for region in captioned:
        assert ("question" in region) != ("question_skipped" in region)
    manifest = json.loads((out / "manifest.json").read_text())
    retarget = manifest["stages"]["retarget"]
    assert retarget["counts"]["prompts"] == len(captioned)
    caption = manifest["stages"]["caption"]
    assert caption["counts"]["crops"] >= 1
    assert caption["rates"]["crops_per_s"] > 0 and caption["rates"]["generated_tokens_per_s"] > 0


def random_l0_masks(folder, num_gpus: float) -> str:
    """The masks.natural override for a random EfficientViT-SAM-L0 (saved in ``folder``) with
    stand-in masks at toy density, asking Ray for ``num_gpus``."""
    import torch

    from curate.amg.build import build_efficientvit_sam

    torch.manual_seed(0)
    checkpoint = folder / "random_l0.pt"
    torch.save(build_efficientvit_sam("l0").net.state_dict(), checkpoint)
    return ("masks.natural={backend: efficientvit_sam, model: l0, checkpoint: %s, stand_in_masks: true, "
            "points_per_side: 2, crop_n_layers: 0, num_gpus: %s}" % (checkpoint, num_gpus))


def test_three_stages_sharing_one_gpu_run_on_a_two_cpu_cluster(tmp_path, sample_dir, tiny_qwen2_vl_dir,
                                                                tiny_llama_dir):
    """Ray is told of one GPU (no real one: the models run on the CPU) and two CPUs; masks, captions
    and questions share the GPU 0.6 / 0.2 / 0.2, as on a one-GPU machine. Each GPU actor used to
    reserve a whole CPU: three did not fit two CPUs and Ray waited forever."""
    out = tmp_path / "out"
    cfg = load_config(pipeline_yaml(tmp_path, [{"type": "dir", "path": str(sample_dir)}], out), [
        random_l0_masks(tmp_path, num_gpus=0.6),
        "caption.natural={backend: hf, model: %s, dtype: fp32, max_new_tokens: 4, batch_size: 4, num_gpus: 0.2, "
        "min_pixels: 3136, max_pixels: 12544}" % tiny_qwen2_vl_dir,
        "retarget={backend: hf, model: %s, dtype: fp32, max_new_tokens: 4, num_gpus: 0.2}" % tiny_llama_dir,
        "ray.num_gpus=1", "ray.num_cpus=2",
    ])
    result = run_pipeline(cfg)
    assert result.read == result.written + result.quarantined == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["regions"]["counts"]["boxes"] >= 1


def test_a_paced_mask_stage_never_stalls_the_run(tmp_path, sample_dir, tiny_qwen2_vl_dir):
    """Masks paced by the captions at the tightest lead (calls of one image): the mask actors read the
    run's board through Ray before each batch (the board exists with no display to read it), and the
    run writes every image. Whether they wait depends on the stages' speeds: here the captions' model
    is still loading while the masks run, so they do not. The waiting itself is tested in place
    (tests/io/test_pacing.py, tests/test_pipeline.py)."""
    out = tmp_path / "out"
    cfg = load_config(pipeline_yaml(tmp_path, [{"type": "dir", "path": str(sample_dir)}], out), [
        "caption.natural={backend: hf, model: %s, dtype: fp32, max_new_tokens: 32, batch_size: 4, "
        "min_pixels: 3136, max_pixels: 12544}" % tiny_qwen2_vl_dir,
        "ray.num_cpus=2", "ray.cpu_batch_size=1", "ray.ingest_batch_size=1", "ray.masks_lead_calls=2",
    ])
    # up to two caption actors on two CPUs: a call each and one gathering
    assert masks_pace(cfg, *plan_with_pools(cfg, {"CPU": 2})) == ("caption", 3)
    result = run_pipeline(cfg)
    assert result.read == result.written + result.quarantined == 6
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages["regions"]["rows"] == stages["caption"]["rows"] == 6


def plan_with_pools(cfg, resources: dict):
    """The run's stage plan and actor pools for a cluster of ``resources``."""
    stages = stage_plan(cfg, resources.get("GPU", 0) > 0, resources["CPU"])
    return stages, plan_actor_pools([(cls.name, gpus) for cls, gpus, _ in stages], resources, resources["CPU"])


def test_pages_go_to_the_documents_stage_when_masks_hold_a_gpu(tmp_path, sample_dir):
    """Ray is told of one GPU (none is real) and four CPUs: photos' masks in the GPU actor, pages'
    regions and OCR captions in the CPU documents stage; the corpus accounts for every image and the
    pages carry real OCR text."""
    import ray

    ray.shutdown()  # a Ray started by an earlier test has no GPU to offer: this run starts its own
    out = tmp_path / "out"
    cfg = load_config(pipeline_yaml(tmp_path, [{"type": "dir", "path": str(sample_dir)}], out), [
        random_l0_masks(tmp_path, num_gpus=1),
        "ray.num_gpus=1", "ray.num_cpus=4",
    ])
    try:
        result = run_pipeline(cfg)
    finally:
        ray.shutdown()  # and later tests must not find its make-believe GPU
    assert result.read == result.written + result.quarantined == 6
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    pages = [r for r in records(out) if r["kind"] == "document"]
    assert pages and stages["documents"]["rows"] == len(pages)
    assert stages["regions"]["rows"] == 6 - len(pages)  # photos only in the GPU actor
    assert stages["documents"]["counts"]["captioned"] >= 1
    assert any(region.get("caption_source") == "ocr" for page in pages for region in page["regions"])
