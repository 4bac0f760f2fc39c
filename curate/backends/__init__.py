"""Model backends, looked up by name.

Each entry maps a config ``backend`` name to ``module:Class``; modules are imported only when the
backend is built, so a missing optional package fails with a message naming what to install.
"""

from __future__ import annotations

import importlib
from typing import Any

MASK_BACKENDS = {
    "skimage_felzenszwalb": "curate.backends.masks_skimage:FelzenszwalbMasks",
    "sam": "curate.backends.masks_sam:SamFamilyMasks",
    "efficientvit_sam": "curate.backends.masks_sam:SamFamilyMasks",
}
CAPTION_BACKENDS = {
    "rapidocr": "curate.backends.ocr_rapid:RapidOcrCaptioner",
    "hf": "curate.backends.vlm_hf:HfVlmCaptioner",
    # vllm runs as ray.data.llm processor stages (curate/pipeline.py), not as a per-actor object.
    "vllm": "curate.backends.llm_vllm:processor_config",
}
RETARGET_BACKENDS = {
    "hf": "curate.backends.llm_hf:HfQuestionWriter",
    "vllm": "curate.backends.llm_vllm:processor_config",
}

# Named in configs (pipelines/ps3.yaml) and validated, but their code paths are not built yet.
PLANNED = {
    "masks": set(),
    "caption": set(),
    "retarget": set(),
}

REGISTRIES = {"masks": MASK_BACKENDS, "caption": CAPTION_BACKENDS, "retarget": RETARGET_BACKENDS}


class BackendUnavailable(RuntimeError):
    """The config names a backend that cannot run in this installation."""


def check_available(stage: str, name: str) -> None:
    registry = REGISTRIES[stage]
    if name in registry:
        return
    if name in PLANNED.get(stage, set()):
        raise BackendUnavailable(
            f"{stage} backend {name!r} is accepted by the config schema but not implemented yet; "
            f"available now: {', '.join(sorted(registry)) or 'none'} (see README, 'What is not yet real')"
        )
    raise BackendUnavailable(f"unknown {stage} backend {name!r}; available: {', '.join(sorted(registry))}")


def build(stage: str, name: str, config: Any) -> Any:
    check_available(stage, name)
    module_name, class_name = REGISTRIES[stage][name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"{stage} backend {name!r} needs a package that is missing: {e}") from e
    return getattr(module, class_name)(config)
