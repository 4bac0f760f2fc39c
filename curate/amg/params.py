"""The generator's arguments: the reference generators' (defaults: PS3 Table 10) plus batching knobs.

The one home of these defaults: the pipeline config (curate/config.py) takes its own from here. This
module imports nothing heavy, so configs load without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AmgParams:
    """The reference generators' arguments (defaults: PS3 Table 10), plus batching knobs."""

    points_per_side: int = 24
    # The reference generators' prompt batch size. It never changes a mask and ours ignores it (decoding
    # batches follow decode_batch); kept so one dict of Table 10 arguments builds both generators.
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.6
    stability_score_thresh: float = 0.85
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 1
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    # most prompts per decoder call (one crop per call, split into equal chunks): 576 is one call per crop
    # at 24 points per side, about 11 GiB peak on the GPU
    decode_batch: int = 576
    encode_batch: int = 8  # crops per image-encoder call
    compile_decoder: bool = False  # torch.compile the decoder (GPU; compiled once per process and shape family)
    # replay the encoder and the decoder (not with compile_decoder) as CUDA graphs on a GPU (graphs.py)
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.min_mask_region_area > 0:
            raise ValueError("min_mask_region_area > 0 (hole/island removal) is not supported yet; PS3 uses 0")
        if self.stability_score_offset < 0:
            raise ValueError(f"stability_score_offset must be >= 0 (a band around the mask threshold), "
                             f"got {self.stability_score_offset}")
