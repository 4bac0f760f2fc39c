"""Pipeline assembly that needs no Ray: how many images a generation stage takes per call."""

from __future__ import annotations

from curate.config import load_config
from curate.pipeline import images_per_call
from tests.conftest import REPO


def test_generation_stages_take_enough_images_for_one_full_model_batch():
    cfg = load_config(REPO / "pipelines" / "ps3.yaml", [
        "caption.natural.backend=hf", "caption.natural.batch_size=256", "retarget.backend=hf",
        "retarget.batch_size=130", "select.max_boxes=4", "ray.cpu_batch_size=4"])
    assert images_per_call(cfg, cfg.caption.natural) == 64  # 256 crops at 4 boxes per image
    assert images_per_call(cfg, cfg.retarget) == 33  # rounded up: a batch is never left short
    few = load_config(REPO / "pipelines" / "ps3.yaml", ["caption.natural.backend=hf", "caption.natural.batch_size=8",
                                                        "ray.cpu_batch_size=4"])
    assert images_per_call(few, few.caption.natural) == 4  # never below the CPU stages' batch
    vllm = load_config(REPO / "pipelines" / "ps3.yaml", [])  # ray.data.llm sizes its own batches
    assert images_per_call(vllm, vllm.caption.natural) == vllm.ray.cpu_batch_size
