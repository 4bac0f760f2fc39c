"""Paths and URIs: what a relative local path names in the driver and in its Ray workers."""

from __future__ import annotations

from curate.io.fs import DRIVER_CWD_ENV, beside, local_file_problem, local_if_there, read_capped, resolve
from curate.io.objpath import output_path


def test_a_worker_reads_a_relative_path_from_the_drivers_folder(tmp_path, monkeypatch):
    driver, worker = tmp_path / "driver", tmp_path / "worker"
    (driver / "photos").mkdir(parents=True)
    worker.mkdir()
    (driver / "photos" / "a.png").write_bytes(b"driver's")
    monkeypatch.chdir(worker)  # a worker on another machine runs in a folder of its own
    monkeypatch.setenv(DRIVER_CWD_ENV, str(driver))  # as init_ray passes it
    assert read_capped("photos/a.png", 100) == b"driver's" and local_file_problem("photos/a.png") is None
    assert "cannot read photos/b.png" in local_file_problem("photos/b.png")  # named as the run listed it
    assert resolve("photos/../photos/a.png")[1] == str(driver / "photos" / "a.png")
    assert output_path("out") == driver / "out" and output_path(str(worker)) == worker
    monkeypatch.delenv(DRIVER_CWD_ENV)  # the driver itself: its own folder
    assert output_path("out") == worker / "out"


def test_a_list_entry_is_named_from_the_lists_folder():
    assert beside("data/list.txt", "imgs/a.png") == "data/imgs/a.png"
    assert beside("list.txt", "./imgs/a.png") == "./imgs/a.png"  # named from its own folder: as written
    assert beside("data/list.txt", "/abs/a.png") == "/abs/a.png"
    assert beside("data/list.txt", "gs://b/a.png") == "gs://b/a.png"
    assert beside("s3://b/lists/l.txt", "../photos/a.png") == "s3://b/photos/a.png"
    assert beside("file:///data/l.txt", "a.png") == "file:///data/a.png"


def test_a_model_named_by_a_relative_folder_is_found_from_the_drivers_folder(tmp_path, monkeypatch):
    (tmp_path / "driver" / "models" / "qwen").mkdir(parents=True)
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")
    monkeypatch.setenv(DRIVER_CWD_ENV, str(tmp_path / "driver"))
    assert local_if_there("models/qwen") == str(tmp_path / "driver" / "models" / "qwen")
    for kept in ("Qwen/Qwen2-VL-7B-Instruct", "hf://owner/repo/sam.pt", "/abs/model", "s3://b/m", ""):
        assert local_if_there(kept) == kept  # a hub id (no such folder), a URI, an absolute path, nothing


def test_a_uri_of_storage_curate_has_no_filesystem_for_is_named_with_what_it_reads():
    import pytest

    from curate.io.fs import UnsupportedStorage

    with pytest.raises(UnsupportedStorage, match=r"https://example.com/a.jpg: https:// is not storage curate reads "
                                                 r"or writes \(local paths, s3://, gs://, abfs://, hdfs://\); it "
                                                 r"downloads no URL: fetch them first \(img2dataset"):
        resolve("https://example.com/a.jpg")
    with pytest.raises(UnsupportedStorage, match=r"ftp://host/x: ftp:// is not storage curate reads or writes"):
        resolve("ftp://host/x")
    assert isinstance(UnsupportedStorage("x"), ValueError)  # every caller that reports a bad value reports it
