"""Reading one sample back: by its key, by the input it came from, and listing what an output holds."""

import pytest

from curate.io.reader import find_record, list_samples
from tests.export.conftest import canvas_output  # noqa: F401
from tests.io.test_corpus import write_question_corpus


@pytest.fixture
def corpus(tmp_path):
    out = tmp_path / "q"
    return out, write_question_corpus(out, n=3)


def test_a_sample_is_found_by_a_prefix_of_its_key(corpus):
    out, rows = corpus
    assert find_record(out, rows[1]["key"][:8].upper())["key"] == rows[1]["key"]


def test_a_sample_is_found_by_the_input_it_came_from(corpus):
    out, rows = corpus
    assert rows[2]["uri"] == "img2.png"
    assert find_record(out, "img2.png")["key"] == rows[2]["key"]  # the path as the run listed it


def test_a_sample_listed_by_a_relative_path_is_found_by_the_whole_path_too(corpus):
    out, rows = corpus  # the run listed img2.png from its folder; a user pastes the file's whole path
    assert find_record(out, "/home/me/photos/img2.png")["key"] == rows[2]["key"]
    assert find_record(out, "./img2.png")["key"] == rows[2]["key"]


def test_a_miss_says_what_was_looked_for_without_quoting_the_message(corpus):
    out, _ = corpus
    with pytest.raises(LookupError) as missed:
        find_record(out, "nothing.png")
    assert str(missed.value) == f"{out}: no sample with the key or input 'nothing.png'"


def test_listing_gives_the_count_and_the_first_samples(corpus):
    out, rows = corpus
    total, first = list_samples(out, limit=2)
    assert total == 3 and [s["key"] for s in first] == [r["key"] for r in rows[:2]]
    assert first[0]["uri"] == "img0.png" and first[0]["width"] == 64 and first[0]["n_regions"] == 2


def test_a_folder_that_is_no_output_is_named_as_such(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json or index.parquet; is this a curate output"):
        list_samples(tmp_path / "nowhere")


def test_a_canvas_output_is_listed_and_read_too(canvas_output):  # noqa: F811
    # its index has no record offsets, and lists quarantined inputs beside the written ones
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, _ = canvas_output
    index = pq.read_table(out / "index.parquet")
    bad = {name: None for name in index.column_names} | {"uri": "bad.png", "status": "quarantined", "reason": "x"}
    pq.write_table(pa.concat_tables([pa.Table.from_pylist([bad], schema=index.schema), index]), out / "index.parquet")
    total, first = list_samples(out)
    assert total == 3 and set(first[0]) == {"key", "width", "height", "background", "turns", "uri"}
    record = find_record(out, first[1]["key"][:10])
    assert record["key"] == first[1]["key"] and record["source"]["uri"] == first[1]["uri"]
    assert find_record(out, first[2]["uri"].rsplit("/", 1)[-1])["key"] == first[2]["key"]
    with pytest.raises(LookupError):
        find_record(out, "bad.png")  # quarantined: listed in the index, never written


def test_an_input_that_was_not_written_is_told_with_its_quarantine_reason(tmp_path):
    """`curate inspect OUT scan.pdf`: why is my file not in the corpus? The quarantine says."""
    from curate.config import PipelineConfig
    from curate.io.corpus import CorpusWriter
    from curate.rows import new_row, quarantine
    from tests.io.test_corpus import _question_row

    out = tmp_path / "c"
    cfg = PipelineConfig.model_validate({"name": "c", "sources": [{"type": "dir", "path": "x"}],
                                         "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
                                         "output": {"path": str(out)}})
    writer = CorpusWriter(out, cfg).open()
    writer.add(_question_row(0))
    writer.add(quarantine(new_row("scans/scan.pdf", "d"), "unsupported_format", "PDF documents are not read"))
    writer.finish()
    with pytest.raises(LookupError) as missed:
        find_record(out, "/home/me/scans/scan.pdf")
    assert str(missed.value) == (f"{out}: scans/scan.pdf was not written: quarantined as unsupported_format "
                                 "(PDF documents are not read)")
