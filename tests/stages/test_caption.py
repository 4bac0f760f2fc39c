"""Caption stage: global captions of whole images (caption.global), on a tiny random Qwen2-VL whose
text is noise: only the plumbing is checked (which rows get one, what is recorded), never content."""

import io
import json

import pytest

from curate.config import ConfigError, load_config
from curate.rows import new_row
from curate.stages.caption import CaptionStage
from tests.conftest import REPO, noise_image

RELAXED = ["min_words=0", "max_repeated_ngram_frac=1.0", "max_sentence_repeats=1000", "min_latin_letter_frac=null",
           "keep_unfinished=true"]


def config(sets: list[str]):
    return load_config(REPO / "pipelines" / "local.yaml", sets)


def hf_natural(model_dir) -> list[str]:
    return [f"caption.natural={json.dumps({'backend': 'hf', 'model': str(model_dir), 'dtype': 'fp32'})}",
            "caption.natural.max_new_tokens=5", "caption.natural.min_pixels=3136", "caption.natural.max_pixels=12544"]


def image_row(seed: int, kind: str = "natural", source_caption: str | None = None) -> dict:
    image = noise_image(320, 240, seed=seed)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    row = new_row(f"img{seed}.png", "test", source_caption=source_caption)
    row.update(status="ok", image=buf.getvalue(), width=image.width, height=image.height, kind=kind,
               global_caption=source_caption, regions=json.dumps([{"box": [0, 0, 100, 100]}]))
    return row


def test_mllm_global_captions_every_image_with_its_own_prompt(tiny_qwen2_vl_dir):
    sets = hf_natural(tiny_qwen2_vl_dir) + ["caption.global.mode=mllm", "caption.global.max_new_tokens=4",
                                           "caption.global.max_pixels=12544", "caption.global.prompt=Whole image?"]
    sets += [f"caption.global.hygiene.{rule}" for rule in RELAXED]
    stage = CaptionStage(config(sets))
    assert "Whole image?" in stage.global_captioner.prompt_text
    assert stage.global_captioner.model is stage.captioners["natural"].model  # one model loaded
    rows = stage.process([image_row(0), image_row(1, kind="document"), {**image_row(2), "status": "quarantined"}])
    for row in rows[:2]:
        assert row["global_caption"] and row["global_caption_skipped"] is None
        assert json.loads(row["events"])["caption.global_captioned"] == 1
        assert json.loads(row["models"])["caption.global"].startswith("hf:")
    assert rows[2]["global_caption"] is None  # not an image that was read


def test_a_dropped_global_caption_says_why(tiny_qwen2_vl_dir):
    # default hygiene: 4 tokens of noise are unfinished and too short
    sets = hf_natural(tiny_qwen2_vl_dir) + ["caption.global.mode=mllm", "caption.global.max_new_tokens=4"]
    [row] = CaptionStage(config(sets)).process([image_row(0)])
    assert row["global_caption"] is None and row["global_caption_skipped"]
    assert any(k.startswith("caption.global_dropped.") for k in json.loads(row["events"]))


@pytest.mark.parametrize("mode, expected", [("source", "A harbour at dusk."), ("none", None)])
def test_source_keeps_the_sources_caption_and_none_clears_it(mode, expected):
    [row] = CaptionStage(config([f"caption.global.mode={mode}"])).process(
        [image_row(0, kind="document", source_caption="A harbour at dusk.")])
    assert row["global_caption"] == expected


@pytest.mark.parametrize("sets, message", [
    (["caption.global.mode=mllm"], "caption.natural has none"),
    (['caption.natural={"backend": "vllm", "model": "m"}', "caption.global.mode=mllm"], "hf only"),
])
def test_mllm_global_captions_need_an_hf_mllm(sets, message):
    with pytest.raises(ConfigError, match=message):
        config(sets)


class Handshake:
    """A fake captioner that, once called, waits until its partner has been called too: called one
    after the other, in either order, the first would time out."""

    def __init__(self, batched: bool, source: str):
        import threading

        self.batched, self.source, self.called, self.partner = batched, source, threading.Event(), None

    def describe(self) -> str:
        return f"fake-{self.source}"

    def _meet(self) -> None:
        self.called.set()
        assert self.partner.called.wait(timeout=10), f"{self.source} ran alone"

    def caption(self, image, boxes, lines=None):  # one image at a time, like OCR
        from curate.backends.types import CaptionResult

        self._meet()
        return [CaptionResult(text=f"text at {box}") for box in boxes]

    def caption_batch(self, requests):  # every crop at once, like the MLLM
        from curate.backends.types import CaptionResult

        self._meet()
        return [CaptionResult(text=f"a region at {box}", tokens=3) for _, box in requests]


def test_document_ocr_runs_while_the_mllm_batch_generates():
    mllm, ocr = Handshake(batched=True, source="mllm"), Handshake(batched=False, source="ocr")
    mllm.partner, ocr.partner = ocr, mllm
    stage = CaptionStage(config([]))
    stage.captioners = {"natural": mllm, "document": ocr}
    rows = stage.process([image_row(0, "natural"), image_row(1, "document"), image_row(2, "natural")])
    captions = [json.loads(row["regions"])[0]["caption"] for row in rows]
    assert captions == ["a region at (0, 0, 100, 100)", "text at (0, 0, 100, 100)", "a region at (0, 0, 100, 100)"]
    assert [json.loads(row["models"])["caption." + row["kind"]] for row in rows] == ["fake-mllm", "fake-ocr",
                                                                                     "fake-mllm"]


class SlowBatchCaptioner:
    """A batched fake whose one call takes at least ``seconds``."""

    batched, source = True, "mllm"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def describe(self) -> str:
        return "fake-slow"

    def caption_batch(self, requests):
        import time

        from curate.backends.types import CaptionResult

        time.sleep(self.seconds)
        return [CaptionResult(text=f"a region at {box}", tokens=3) for _, box in requests]


def test_a_batched_call_says_where_its_time_went():
    stage = CaptionStage(config([]))
    stage.captioners = {"natural": SlowBatchCaptioner(0.2)}
    rows = stage.process([image_row(0), image_row(1)])
    events = [json.loads(row["events"]) for row in rows]
    assert [e["caption.crops"] for e in events] == [1, 1]
    # the model's call is shared between the call's rows; decoding is timed apart from it
    assert sum(e["caption.caption_ms"] for e in events) >= 198
    assert all(isinstance(e["caption.decode_ms"], int) and e["caption.decode_ms"] < e["caption.caption_ms"]
               for e in events)
