from pathlib import Path

import pytest
import yaml

from curate.config import ConfigError, load_config
from tests.conftest import REPO


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def minimal() -> dict:
    return {"name": "t", "sources": [{"type": "dir", "path": "x"}],
            "masks": {"natural": {"backend": "skimage_felzenszwalb"}}}


@pytest.mark.parametrize("name", ["local.yaml", "ps3.yaml"])
def test_shipped_pipelines_validate(name):
    cfg = load_config(REPO / "pipelines" / name)
    assert cfg.select.max_boxes == 4


def test_ps3_yaml_carries_table10_arguments():
    masks = load_config(REPO / "pipelines" / "ps3.yaml").masks.natural
    assert (masks.backend, masks.model) == ("efficientvit_sam", "xl1")
    assert (masks.points_per_side, masks.crop_n_layers,
            masks.crop_n_points_downscale_factor, masks.pred_iou_thresh, masks.stability_score_thresh,
            masks.min_mask_region_area) == (24, 1, 1, 0.6, 0.85, 0)


def test_config_amg_defaults_are_the_generators():
    from curate.amg.params import AmgParams
    from curate.config import SamAmgParams

    ours, theirs = SamAmgParams(), AmgParams()
    for name in SamAmgParams.model_fields:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_a_removed_key_gets_a_clear_error(tmp_path):
    data = minimal()
    data["masks"] = {"natural": {"backend": "sam", "checkpoint": "x.pt", "points_per_batch": 128}}
    with pytest.raises(ConfigError, match="points_per_batch was removed: .*decode_batch"):
        load_config(write(tmp_path, data))


def test_unknown_key_names_file_and_key(tmp_path):
    data = minimal()
    data["select"] = {"max_boxes": 4, "max_boxs": 5}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "select.max_boxs: unknown key" in str(err.value)


def test_an_unknown_key_names_the_nearest_known_one(tmp_path):
    """A typo, or a pipeline's key in a train config (`output.path` there is `out`), gets the key meant."""
    from curate.train.config import load_train_config

    data = minimal()
    data["select"] = {"max_boxs": 5}
    data["masks"]["natural"] = {"backend": "sam", "checkpoint": "x.pt", "points_per_sid": 16}
    data["sources"][0]["pth"] = "y"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    said = str(err.value)
    assert "select.max_boxs: unknown key (did you mean max_boxes?)" in said
    assert "masks.natural.points_per_sid: unknown key (did you mean points_per_side?)" in said
    assert "sources.0.pth: unknown key (did you mean path?)" in said
    with pytest.raises(ConfigError, match=r"  output: unknown key \(did you mean out\?\) \(from --set output.path=x\)"):
        load_train_config(REPO / "pipelines" / "train_local.yaml", ["output.path=x"])
    data = minimal()
    data["zzz"] = 1  # nothing near: no guess
    with pytest.raises(ConfigError, match=r"zzz: unknown key$"):
        load_config(write(tmp_path, data))


def test_unknown_key_inside_backend_union_names_the_key(tmp_path):
    data = minimal()
    data["masks"]["natural"]["points_per_side"] = 24  # a SAM key, not a felzenszwalb one
    with pytest.raises(ConfigError, match=r"masks\.natural\.points_per_side: unknown key"):
        load_config(write(tmp_path, data))


def test_set_backend_drops_the_old_backends_options_by_name(tmp_path, caplog):
    """--set caption.natural.backend=none on a config written for vLLM: the vLLM options are
    dropped with a warning naming them; switching vllm -> hf keeps them (both take them); an
    unknown key that no switch explains is still an error."""
    data = minimal()
    data["caption"] = {"natural": {"backend": "vllm", "model": "Qwen/Qwen2-VL-7B-Instruct", "temperature": 0.0,
                                   "batch_size": 64}}
    path = write(tmp_path, data)
    with caplog.at_level("WARNING", logger="curate.config"):
        cfg = load_config(path, ["caption.natural.backend=none"])
    assert cfg.caption.natural.backend == "none"
    assert "caption.natural.model" in caplog.text and "caption.natural.batch_size" in caplog.text
    cfg = load_config(path, ["caption.natural.backend=hf"])
    assert (cfg.caption.natural.backend, cfg.caption.natural.model) == ("hf", "Qwen/Qwen2-VL-7B-Instruct")
    data["caption"]["natural"]["tempreature"] = 0.5
    with pytest.raises(ConfigError, match=r"caption\.natural\.tempreature: unknown key"):
        load_config(write(tmp_path, data), ["caption.natural.backend=hf"])


def test_bad_value_and_unknown_backend(tmp_path):
    data = minimal()
    data["select"] = {"max_boxes": -1}
    with pytest.raises(ConfigError, match=r"select\.max_boxes"):
        load_config(write(tmp_path, data))
    data = minimal()
    data["masks"] = {"natural": {"backend": "magic"}}
    with pytest.raises(ConfigError, match="masks"):
        load_config(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_set_nested_and_list_items(tmp_path):
    path = write(tmp_path, minimal())
    cfg = load_config(path, ["select.max_boxes=6", "sources.0.kind=document", "output.path=o/x"])
    assert cfg.select.max_boxes == 6
    assert cfg.sources[0].kind == "document"
    assert cfg.output.path == "o/x"
    with pytest.raises(ConfigError, match="no item 3"):
        load_config(path, ["sources.3.path=y"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, ["select.max_boxes"])


def test_config_hash_ignores_where_and_how_it_runs(tmp_path):
    path = write(tmp_path, minimal())
    base = load_config(path).sha256()
    assert load_config(path, ["output.path=elsewhere", "ray.num_cpus=7"]).sha256() == base
    assert load_config(path, ["select.max_boxes=2"]).sha256() != base


def test_retarget_backend_needs_a_model(tmp_path):
    data = minimal()
    data["retarget"] = {"backend": "hf"}
    with pytest.raises(ConfigError, match="needs a model"):
        load_config(write(tmp_path, data))


def test_old_masks_form_and_moved_select_keys_get_clear_errors(tmp_path):
    data = minimal()
    data["masks"] = {"backend": "skimage_felzenszwalb"}
    with pytest.raises(ConfigError, match="masks is set per image kind now"):
        load_config(write(tmp_path, data))
    data = minimal()
    data["select"] = {"document_regions": "ocr_layout"}
    with pytest.raises(ConfigError, match="document_regions moved: .*backend: ocr_layout"):
        load_config(write(tmp_path, data))


def test_documents_can_have_their_own_mask_backend(tmp_path):
    data = minimal()
    data["masks"]["document"] = {"backend": "ocr_layout", "max_side": 1024}
    cfg = load_config(write(tmp_path, data))
    assert cfg.masks.for_kind("document").max_side == 1024
    assert cfg.masks.for_kind("natural").backend == "skimage_felzenszwalb"
    data["masks"].pop("document")
    assert load_config(write(tmp_path, data)).masks.for_kind("document").backend == "skimage_felzenszwalb"


@pytest.mark.parametrize("pipeline", ["local.yaml", "ps3.yaml"])
def test_shipped_pipelines_make_document_regions_of_text_lines(pipeline):
    section = load_config(REPO / "pipelines" / pipeline).masks.for_kind("document")
    assert (section.backend, section.regions) == ("ocr_layout", "lines")


def test_a_missing_config_file_names_the_pipelines_that_come_with_curate(tmp_path):
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "pipelines" / "local.yaml")
    said = str(missing.value)
    assert said.startswith(f"{tmp_path / 'pipelines' / 'local.yaml'}: cannot read config (No such file or directory)")
    bundled = REPO / "pipelines"
    assert f"{bundled / 'local.yaml'}" in said and f"{bundled / 'ps3.yaml'}" in said


def test_a_path_that_starts_with_the_home_folder_is_expanded(monkeypatch, tmp_path):
    # `path: ~/photos` in YAML, or `--output=~/corpus`, reaches curate unexpanded by any shell
    from curate.augment.config import load_canvas_config
    from curate.config import SourceConfig
    from curate.train.config import load_train_config

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(REPO / "pipelines" / "ps3.yaml", ["output.path=~/corpus", "masks.natural.checkpoint=~/w/x.pt",
                                                        "caption.natural.model=~/models/qwen"])
    assert cfg.output.path == str(tmp_path / "corpus")
    assert cfg.masks.natural.checkpoint == str(tmp_path / "w" / "x.pt")
    assert cfg.caption.natural.model == str(tmp_path / "models" / "qwen")
    assert SourceConfig(type="dir", path="~/photos").path == str(tmp_path / "photos")
    assert SourceConfig(type="dir", path="s3://b/~x").path == "s3://b/~x"  # only a leading ~
    train = load_train_config(REPO / "pipelines" / "train_local.yaml", ["data.shards=~/s/*.tar", "out=~/t"])
    assert train.data.shards == [str(tmp_path / "s" / "*.tar")] and train.out == str(tmp_path / "t")
    canvas = load_canvas_config(REPO / "pipelines" / "canvas.yaml",
                                ["source.path=~/vqa.json", "output.path=~/canvas"])
    assert canvas.source.path == str(tmp_path / "vqa.json") and canvas.output.path == str(tmp_path / "canvas")


def test_an_input_or_output_on_storage_curate_cannot_reach_is_a_config_error_naming_the_key(tmp_path):
    data = minimal()
    data["sources"][0]["path"] = "https://example.com/photos/"
    data["output"] = {"path": "ftp://host/out"}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    said = str(err.value)
    assert "sources.0.path: Value error, https://example.com/photos/: https:// is not storage" in said
    assert "output.path: Value error, ftp://host/out: ftp:// is not storage" in said
    data = minimal()
    data["masks"]["natural"] = {"backend": "sam", "checkpoint": "hf://owner/repo/sam.pt"}  # a hub file: not storage
    assert load_config(write(tmp_path, data)).masks.natural.checkpoint == "hf://owner/repo/sam.pt"


def test_a_set_value_is_taken_as_text_where_the_key_takes_text(tmp_path):
    """`-o 2024-01-01` (a dated folder) or `-o 123` reached output.path as a YAML date or number and was
    refused; where the key takes a string, the --set value is its own text."""
    path = write(tmp_path, minimal())
    for text in ("2024-01-01", "123", "true", "1e3"):
        assert load_config(path, [f"output.path={text}"]).output.path == text
    assert load_config(path, ["sources.0.path=2024-01-01"]).sources[0].path == "2024-01-01"
    assert load_config(path, ["select.max_boxes=6"]).select.max_boxes == 6  # numbers stay numbers
    with pytest.raises(ConfigError, match=r"select\.max_boxes: .*integer.*\(from --set select.max_boxes=many\)"):
        load_config(path, ["select.max_boxes=many"])
