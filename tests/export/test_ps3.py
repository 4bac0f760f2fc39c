"""`curate export ps3` against PS3's documented two-set contract (NVlabs/PS3 train/README.md and
``webdataset_separate_image_text_box`` in its data.py), and the round trip into `curate train`."""

from __future__ import annotations

import io
import json
import random
import re
import tarfile

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.export.ps3 import export_ps3
from curate.io.corpus import CorpusWriter
from curate.io.ownership import OutputRefused
from curate.rows import new_row
from tests.conftest import jpeg_bytes, noise_image, png_bytes


def region(box, caption=None, w=640, h=480):
    x0, y0, x1, y1 = box
    r = {"box": list(box), "box_norm": [x0 / w, y0 / h, x1 / w, y1 / h], "score": 1.0, "n_masks": 3,
         "mask_area_frac": 0.1}
    if caption is not None:
        r.update(caption=caption, caption_source="ocr", caption_model="test")
    return r


def row(i, regions, image=None, ext="png", global_caption=None):
    key = f"{i:020x}"
    r = new_row(f"/in/{i}.{ext}", "d")
    r.update(status="ok", key=key, sha256=key + "0" * 44, kind="document", image_ext=ext, width=640, height=480,
             image=image if image is not None else png_bytes(noise_image(640, 480, seed=i)),
             regions=json.dumps(regions), global_caption=global_caption)
    return r


CORPUS = {  # index -> (regions, global caption, note)
    0: ([region((10, 20, 200, 60), "INVOICE 2041"), region((10, 80, 300, 120), "Total due: 12.50")], None),
    1: ([region((50, 50, 150, 150))], None),  # a region without caption: nothing to export
    2: ([region((0, 0, 320, 240), "a red door"), region((320, 240, 640, 480))], "A street at dusk."),
    3: ([], "A whole-image caption only."),
    4: ([region((5, 5, 100, 100), "broken bytes")], None),  # stored image will not decode
    5: ([region((100, 100, 400, 300), "a jpeg region")], None),
}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "sources": [{"type": "dir", "path": str(tmp_path / "in")}],
                                    "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
                                    "output": {"path": str(tmp_path / "corpus"), "shard_max_samples": 2}}))
    cfg = load_config(path)
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i, (regions, global_caption) in CORPUS.items():
        image = {4: b"\x89PNG\r\n\x1a\n" + b"\0" * 200, 5: jpeg_bytes(noise_image(640, 480, seed=5))}.get(i)
        writer.add(row(i, regions, image=image, ext="jpg" if i == 5 else "png", global_caption=global_caption))
    writer.finish()
    return tmp_path / "corpus"


def ps3_contract_reader(dest, use_global_caption=True, seed=0):
    """What PS3's CombinedDataset_ImageTextBox does with the two sets, reduced to the checks it
    makes and the fields it uses: lock-step keys, 'text'/'box'/'global_text', one box per step."""
    rng = random.Random(seed)
    images = sorted((dest / "images").glob("*.tar"))
    boxes = sorted((dest / "text_box").glob("*.tar"))
    assert [p.name for p in images] == [p.name for p in boxes]
    out = []
    for image_tar, box_tar in zip(images, boxes):
        with tarfile.open(image_tar) as a, tarfile.open(box_tar) as b:
            image_members, box_members = a.getmembers(), b.getmembers()
            assert len(image_members) == len(box_members)
            for im, bx in zip(image_members, box_members):
                assert im.name.split(".")[0] == bx.name.split(".")[0], "Keys must match"
                assert bx.name.endswith(".json") and im.name.rsplit(".", 1)[1] in ("jpg", "png", "jpeg", "webp")
                image = Image.open(io.BytesIO(a.extractfile(im).read())).convert("RGB")  # wds.decode("pilrgb")
                tb = json.loads(b.extractfile(bx).read())
                if "text" in tb or not use_global_caption:
                    texts = tb["text"]  # KeyError here is what PS3 raises without --use_global_caption
                    assert texts and all(isinstance(t, str) for t in texts)  # null/empty break PS3
                    assert len(tb["box"]) == len(texts)
                    ids = rng.sample(range(len(texts)), 1)  # --sample_n_box_each_image 1
                    for x0, y0, x1, y1 in tb["box"]:  # absolute pixels inside the image
                        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
                    out.append((im.name.split(".")[0], [texts[i] for i in ids], tb))
                else:
                    assert isinstance(tb["global_text"], str)
                    out.append((im.name.split(".")[0], [tb["global_text"]], tb))
    return out


def test_export_follows_the_ps3_contract_and_counts_what_it_leaves_out(corpus, tmp_path):
    result = export_ps3(corpus, tmp_path / "ps3")
    read = ps3_contract_reader(tmp_path / "ps3")
    keys = [k for k, _, _ in read]
    assert keys == [f"{i:020x}" for i in (0, 2, 3, 5)]
    assert result.counts["samples"] == 4 and result.counts["skipped_no_caption"] == 1
    assert result.counts["skipped_undecodable"] == 1 and result.counts["global_only"] == 1
    by_key = {k: tb for k, _, tb in read}
    assert by_key[f"{0:020x}"] == {"text": ["INVOICE 2041", "Total due: 12.50"],
                                   "box": [[10, 20, 200, 60], [10, 80, 300, 120]]}
    assert by_key[f"{2:020x}"] == {"text": ["a red door"], "box": [[0, 0, 320, 240]],
                                   "global_text": "A street at dusk."}
    assert by_key[f"{3:020x}"] == {"global_text": "A whole-image caption only."}
    flags = result.flags()
    assert flags[flags.index("--train-num-samples") + 1] == "4" and "--use_global_caption" in flags
    assert re.search(r"images/train-\{000000\.\.000002\}\.tar$", flags[flags.index("--train-data-image") + 1])
    assert json.loads((tmp_path / "ps3" / "summary.json").read_text())["counts"]["samples"] == 4


def test_image_bytes_are_copied_as_stored(corpus, tmp_path):
    export_ps3(corpus, tmp_path / "ps3")
    stored = {}
    for shard in sorted((corpus / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            stored.update({m.name: tar.extractfile(m).read() for m in tar if not m.name.endswith(".json")})
    for shard in sorted((tmp_path / "ps3" / "images").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                assert tar.extractfile(m).read() == stored[m.name]


def test_a_killed_export_resumes_to_the_same_bytes(corpus, tmp_path):
    export_ps3(corpus, tmp_path / "clean")
    dest = tmp_path / "killed"
    export_ps3(corpus, dest)
    (dest / ".curate" / "exported" / "train-000001.json").unlink()  # pair 1 never committed
    (dest / "images" / "train-000001.tar").write_bytes(b"half")
    (dest / "text_box" / "train-000001.tar.tmp").write_bytes(b"half")
    again = export_ps3(corpus, dest)
    assert again.counts["samples"] == 4
    for folder in ("images", "text_box"):
        for clean in sorted((tmp_path / "clean" / folder).glob("*.tar")):
            assert (dest / folder / clean.name).read_bytes() == clean.read_bytes()
    assert not list(dest.rglob("*.tmp"))


def test_round_trip_into_the_trainer_gives_the_same_boxes_and_captions(corpus, tmp_path):
    from curate.train.config import TrainConfig
    from curate.train.data import make_dataset

    export_ps3(corpus, tmp_path / "ps3")

    def batches(data):
        cfg = TrainConfig.model_validate({"data": {**data, "max_regions": 4, "global_caption_prob": 0},
                                          "model": {"low_res": 32, "hi_res": 64}, "optim": {"batch_size": 1},
                                          "out": str(tmp_path / "t")})
        return {b["keys"][0]: (b["boxes"].tolist(), b["texts"]) for b in make_dataset(cfg, 8, 0)}

    exported = batches({"shards": [str(tmp_path / "ps3" / "images" / "*.tar")],
                        "ps3_text_box": [str(tmp_path / "ps3" / "text_box" / "*.tar")]})
    assert set(exported) == {f"{i:020x}" for i in (0, 2, 5)}  # the global-only sample has no region
    for key, (boxes, texts) in exported.items():
        # what the trainer reads from the corpus's own shards: box_norm and caption of captioned regions
        regions = [r for r in CORPUS[int(key, 16)][0] if r.get("caption")]
        assert texts == [r["caption"] for r in regions]
        assert len(boxes) == len(regions)
        for got, r in zip(boxes, regions):
            assert got == pytest.approx(r["box_norm"], abs=1e-6)


def test_export_refuses_an_unfinished_corpus_and_a_destination_inside_it(corpus, tmp_path):
    with pytest.raises(OutputRefused, match="overlaps the input"):
        export_ps3(corpus, corpus / "ps3")
    manifest = json.loads((corpus / "manifest.json").read_text())
    (corpus / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(OutputRefused, match="finish it"):
        export_ps3(corpus, tmp_path / "ps3")


def test_cli_prints_the_ps3_training_flags(corpus, tmp_path):
    result = CliRunner().invoke(app, ["export", "ps3", str(corpus), str(tmp_path / "ps3")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--dataset-type webdataset_separate_image_text_box" in text and "--train-num-samples 4" in text
    assert f"--train-data-image '{(tmp_path / 'ps3').resolve()}/images/train-{{000000..000002}}.tar'" in text


def test_question_shards_export_each_question_as_its_regions_text(tmp_path):
    from tests.io.test_corpus import write_question_corpus

    rows = write_question_corpus(tmp_path / "corpus", n=3)
    result = export_ps3(tmp_path / "corpus", tmp_path / "ps3", what="questions")
    read = ps3_contract_reader(tmp_path / "ps3")
    assert result.counts["samples"] == 3 == len(read)
    for (key, _, tb), row in zip(read, rows):
        assert key == f"{row['key']}_1"
        assert tb == {"text": ["Which bus number is shown on the front sign?"], "box": [[5, 5, 30, 30]]}
    with tarfile.open(tmp_path / "ps3" / "images" / "train-000000.tar") as tar:
        assert tar.extractfile(tar.getmembers()[0]).read() == rows[0]["image"]


def test_canvas_outputs_export_the_pasted_box_with_its_qa(tmp_path, canvas_output):
    canvas, folder = canvas_output
    result = export_ps3(canvas, tmp_path / "ps3")
    read = ps3_contract_reader(tmp_path / "ps3")
    assert result.counts["samples"] == 3 == len(read)
    source = json.loads((folder / "llava.json").read_text())
    for (_, _, tb), entry in zip(read, source):
        question = entry["conversations"][0]["value"].replace("<image>", "").strip()
        assert tb["text"] == [f"{question} {entry['conversations'][1]['value']}"] and len(tb["box"]) == 1


def test_an_export_with_no_captioned_sample_says_why_and_prints_no_training_flags(tmp_path):
    """`make demo`'s photos have no MLLM caption: an export of only such samples is an error that
    says what to set, not PS3 flags with --train-num-samples 0."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "sources": [{"type": "dir", "path": str(tmp_path / "in")}],
                                    "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
                                    "output": {"path": str(tmp_path / "corpus")}}))
    writer = CorpusWriter(tmp_path / "corpus", load_config(path)).open()
    for i in range(2):
        writer.add(row(i, [region((10, 10, 100, 100))]))
    writer.finish()
    result = CliRunner().invoke(app, ["export", "ps3", str(tmp_path / "corpus"), str(tmp_path / "ps3")])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert "exported 0 samples" in text and "left out: 2 with no caption" in text
    assert "nothing to train on: no sample has a caption" in text and "caption.natural" in text
    assert "--train-num-samples" not in text
