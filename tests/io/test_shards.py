import tarfile

import pytest

from curate.io.layout import tmp_path
from curate.io.shards import ShardWriter


def test_shard_is_invisible_until_closed_and_offsets_point_at_data(tmp_path):
    path = tmp_path / "train-000000.tar"
    writer = ShardWriter(path)
    members = {}
    for i in range(3):
        payload = {"jpg": bytes([i]) * (700 + i * 513), "json": b'{"k": %d}' % i}
        members[f"k{i}"] = (payload, writer.add(f"k{i}", payload))
    assert not path.exists() and tmp_path.joinpath("train-000000.tar.tmp").exists()
    writer.close()
    assert path.exists() and not tmp_path.joinpath("train-000000.tar.tmp").exists()
    raw = path.read_bytes()
    for key, (payload, locations) in members.items():
        for ext, data in payload.items():
            loc = locations[ext]
            assert raw[loc.offset: loc.offset + loc.size] == data, (key, ext)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names == ["k0.jpg", "k0.json", "k1.jpg", "k1.json", "k2.jpg", "k2.json"]
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_same_samples_give_identical_bytes(tmp_path):
    outputs = []
    for name in ("a.tar", "b.tar"):
        writer = ShardWriter(tmp_path / name)
        writer.add("x", {"png": b"abc", "json": b"{}"})
        outputs.append(writer.close().read_bytes())
    assert outputs[0] == outputs[1]


def test_abort_leaves_nothing(tmp_path):
    writer = ShardWriter(tmp_path / "s.tar")
    writer.add("x", {"png": b"abc"})
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    assert not tmp_path_exists(tmp_path / "s.tar")


def tmp_path_exists(path):
    return path.exists() or tmp_path(path).exists()


def test_unwritable_output_dir_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        ShardWriter(tmp_path / "missing" / "s.tar")
