"""The ingest stage over listed rows, some already quarantined by the listing."""

from __future__ import annotations

from curate.config import SourceConfig
from curate.config.loading import load_config
from curate.io.sources import list_source
from curate.stages.ingest import IngestStage


def test_a_row_the_listing_quarantined_keeps_its_reason_and_is_not_read(tmp_path):
    """A list's bad line, a PDF in a folder: their listing reason reaches the manifest, not a later
    'cannot read LIST#line=2' from an attempt to read them."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "scan.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "list.txt").write_bytes(b"photos/scan.pdf\n\xff\xfe\n")
    rows = [*list_source(SourceConfig(type="list", path=str(tmp_path / "list.txt"))),
            *list_source(SourceConfig(type="dir", path=str(tmp_path / "photos")))]
    listed = [(row["status"], row["reason"], row["detail"]) for row in rows]
    ingested = IngestStage(load_config("pipelines/local.yaml")).process(rows)
    assert [(row["status"], row["reason"], row["detail"]) for row in ingested][1:] == listed[1:]
    assert listed[1] == ("quarantined", "invalid_entry", "line=2: not UTF-8 text")
    assert ingested[0]["reason"] == "not_an_image"  # a list's entry is read: its name is not trusted
