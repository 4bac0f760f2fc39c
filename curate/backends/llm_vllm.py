"""vLLM through ray.data.llm: processor configs and the row functions around them.

ray.data.llm runs one request per row, so an image row is exploded into one *request row* per region
to caption (``caption_requests`` / ``question_requests`` in the stages); the processor batches those
requests over vLLM engine replicas (batching, tensor parallelism and the GPU actor pool are Ray's);
``Reassembler`` on the driver puts an image's answers back into its row. An image with nothing to
ask rides along as a single one-token text request, so every image stays in one stream and is
accounted for.

ray.data.llm and vllm are imported only when a processor is built (``pip install 'curate[vllm]'``).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
from collections.abc import Callable

from PIL import Image

from curate.config import DTYPE_NAMES
from curate.io.fs import local_if_there

CARRIER_PROMPT = "."


def data_url(image: Image.Image, quality: int = 95) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def sampling_params(cfg, max_tokens: int | None = None) -> dict:
    params = {"max_tokens": max_tokens or cfg.max_new_tokens, "temperature": cfg.temperature}
    if cfg.temperature > 0:
        params["top_p"] = cfg.top_p
    return params


def engine_kwargs(cfg, images_per_prompt: int = 0) -> dict:
    kwargs = {
        "dtype": DTYPE_NAMES[cfg.dtype],
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
    }
    if images_per_prompt:
        kwargs["limit_mm_per_prompt"] = {"image": images_per_prompt}
        kwargs["mm_processor_kwargs"] = {"min_pixels": cfg.min_pixels, "max_pixels": cfg.max_pixels}
    return kwargs


def processor_config(cfg, multimodal: bool):
    """A validated ``vLLMEngineProcessorConfig`` for a caption (multimodal) or retarget stage."""
    from ray.data.llm import vLLMEngineProcessorConfig

    images = (2 if cfg.thumbnail else 1) if multimodal else 0
    return vLLMEngineProcessorConfig(
        model_source=local_if_there(cfg.model),  # a relative folder: the driver's, on every node
        engine_kwargs=engine_kwargs(cfg, images),
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
        prepare_multimodal_stage={"enabled": multimodal},
        chat_template_stage={"enabled": True},
        tokenize_stage={"enabled": True},
        detokenize_stage={"enabled": True},
    )


def build_processor(cfg, multimodal: bool):
    from ray.data.llm import build_processor as ray_build_processor

    return ray_build_processor(processor_config(cfg, multimodal), preprocess=to_request, postprocess=record_answer)


# ---------------------------------------------------------------- request rows (pure)


def request_row(uri: str, index: int, total: int, messages: list[dict], params: dict,
                payload: dict | None) -> dict:
    """One request; ``payload`` (the whole image row, pickled) travels with request 0 only."""
    return {
        "uri": uri, "request_index": index, "request_total": total,
        "request_messages": json.dumps(messages), "request_sampling": json.dumps(params),
        "payload": pickle.dumps(payload) if payload is not None else None,
        "answers": "[]",  # one [text, tokens, finished] per processor this row went through
    }


def carrier_row(uri: str, payload: dict) -> dict:
    messages = [{"role": "user", "content": CARRIER_PROMPT}]
    return request_row(uri, 0, 0, messages, {"max_tokens": 1, "temperature": 0.0}, payload)


def image_message(images: list[Image.Image], text: str) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in images]
    return [{"role": "user", "content": content + [{"type": "text", "text": text}]}]


def to_request(row: dict) -> dict:
    """ray.data.llm preprocess: our request row -> the columns the processor reads."""
    return {**row, "messages": json.loads(row["request_messages"]),
            "sampling_params": json.loads(row["request_sampling"])}


def record_answer(row: dict) -> dict:
    """ray.data.llm postprocess: append this step's answer, keep only our columns (drops the
    messages and their image data). A request that stopped at its max_tokens counts as unfinished
    (ray.data.llm reports no finish reason)."""
    tokens = int(row.get("num_generated_tokens") or 0)
    limit = json.loads(row["request_sampling"])["max_tokens"]
    answers = json.loads(row["answers"]) + [[row.get("generated_text") or "", tokens, tokens < limit]]
    return {**{k: row[k] for k in REQUEST_COLUMNS}, "answers": json.dumps(answers)}


REQUEST_COLUMNS = ("uri", "request_index", "request_total", "request_messages", "request_sampling", "payload")


class Reassembler:
    """Collects an image's answered requests (in any order) and returns the image row when complete."""

    def __init__(self, merge: Callable[[dict, list[list]], dict]):
        """``merge(image_row, answers)``: answers[i] lists request i's answers, one per processor."""
        self.merge = merge
        self.pending: dict[str, dict] = {}

    def add(self, row: dict) -> dict | None:
        entry = self.pending.setdefault(row["uri"], {"payload": None, "answers": {}, "total": None})
        if row["payload"] is not None:
            entry["payload"] = pickle.loads(row["payload"])
        entry["total"] = row["request_total"]
        if row["request_total"]:
            entry["answers"][row["request_index"]] = [tuple(a) for a in json.loads(row["answers"])]
        if entry["payload"] is None or len(entry["answers"]) < entry["total"]:
            return None
        del self.pending[row["uri"]]
        answers = [entry["answers"][i] for i in range(entry["total"])]
        return self.merge(entry["payload"], answers)

    def incomplete(self) -> list[str]:
        return sorted(self.pending)
