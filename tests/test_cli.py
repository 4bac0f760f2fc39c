"""The CLI as a new user first meets it: ``--help`` reads as prose at any terminal width."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app

COMMANDS = [["run"], ["train"], ["evaluate"], ["validate"], ["schema"], ["stats"], ["inspect"], ["cat"],
            ["samples"], ["augment", "canvas"], ["export", "ps3"], ["export", "llava"]]
WIDTHS = (80, 132)  # a default terminal, a wide one


def help_text(command: list[str], width: int = 100) -> str:
    done = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(width)})
    assert done.exit_code == 0, done.output
    return done.output


def broken_early(lines: list[str], width: int) -> list[tuple[str, str]]:
    """Consecutive lines of one paragraph where the second's first word would have fitted on the first:
    the break came from the docstring's source line, not from the terminal's width."""
    return [(line.strip(), after.strip()) for line, after in zip(lines, lines[1:])
            if line.strip() and after.strip()
            and len(line.rstrip()) + 1 + len(after.split()[0]) < width - 2]


def description(text: str) -> list[list[str]]:
    """The paragraphs between the usage line and the first panel."""
    body = text.split("Usage:")[1].split("╭")[0].splitlines()[1:]
    paragraphs, current = [], []
    for line in body:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs, current = [*paragraphs, current], []
    return paragraphs + ([current] if current else [])


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_commands_description_is_wrapped_to_the_terminal_not_to_the_docstring(command, width):
    for paragraph in description(help_text(command, width)):
        assert not broken_early(paragraph, width), paragraph


@pytest.mark.parametrize("width", WIDTHS)
def test_the_command_list_is_wrapped_to_the_terminal_not_to_the_docstrings(width):
    panel = help_text([], width).split("Commands")[1].split("╰")[0]
    rows = [line.strip().strip("│") for line in panel.splitlines()[1:]]
    inner = max(len(row) for row in rows)
    entries, current = [], []
    for row in rows:
        if row[:2].strip():  # a command's name starts a new entry
            entries, current = ([*entries, current] if current else entries), [row]
        else:
            current.append(row)
    entries.append(current)
    assert len(entries) >= 10
    for entry in entries:
        assert not broken_early(entry, inner), entry


def test_markup_characters_in_help_survive():
    assert "DEST/images/*.tar" in help_text(["export", "ps3"])
    assert "<box>(x0,y0),(x1,y1)</box>" in " ".join(help_text(["export", "llava"]).split())


def test_inspect_lists_an_outputs_samples_and_finds_one_by_its_input(tmp_path):
    import json

    from tests.io.test_corpus import write_question_corpus

    out = tmp_path / "q"
    rows = write_question_corpus(out, n=3)
    runner = CliRunner()
    listed = runner.invoke(app, ["inspect", str(out), "-n", "2"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "3 samples, the first 2" in listed.output
    assert rows[0]["key"] in listed.output and rows[1]["key"] in listed.output and rows[2]["key"] not in listed.output
    found = runner.invoke(app, ["inspect", str(out), "img2.png"])
    assert found.exit_code == 0 and json.loads(found.stdout)["key"] == rows[2]["key"]
    missed = runner.invoke(app, ["inspect", str(out), "img9.png"])
    assert missed.exit_code == 2 and "no sample with the key or input 'img9.png'" in " ".join(missed.output.split())


@pytest.mark.parametrize("command", [["export", "ps3", "--what", "bogus"], ["export", "llava", "--box-in", "bogus"]],
                         ids=" ".join)
def test_a_bad_choice_names_the_option_and_the_choices(tmp_path, command):
    done = CliRunner().invoke(app, [*command[:2], str(tmp_path / "corpus"), str(tmp_path / "dest"), *command[2:]])
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and f"{command[2]} 'bogus': choose" in said, said
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_flag_shows_no_value_type_and_a_repeatable_option_the_type_of_one_value(command):
    # `--verify <bool>` reads as `--verify true` (an error: a flag takes no value); `--input <list[str]>`
    # as a Python list (it takes one value per use)
    rows = [line for line in help_text(command, 200).splitlines() if line.lstrip("│ ").startswith("-")]
    assert rows and not [row for row in rows if "<bool>" in row or "<list[" in row]


def test_the_run_commands_options_show_what_they_take():
    rows = {line.split()[1]: line for line in help_text(["run"], 200).splitlines() if line.startswith("│ --")}
    assert "<str>" in rows["--input"] and "(repeatable" in rows["--input"]
    assert "<str>" not in rows["--verify"] and "on resume" in rows["--verify"]


def test_version_names_curate_and_the_libraries_a_bug_report_needs():
    from importlib.metadata import version

    import curate

    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0, done.output
    first, libraries = done.output.splitlines()[0], done.output.splitlines()[1]
    assert first == f"curate {curate.__version__}"
    for name in ("ray", "torch", "transformers", "pillow", "pyarrow"):
        assert f"{name} {version(name)}" in libraries


@pytest.mark.parametrize("command", [["stats", "https://example.com/out"], ["inspect", "https://example.com/out"],
                                     ["cat", "https://example.com/out/index.parquet"],
                                     ["run", "pipelines/local.yaml", "-i", "https://example.com/photos/"],
                                     ["validate", "pipelines/local.yaml", "-o", "https://example.com/out"]])
def test_a_url_where_storage_is_expected_is_a_one_line_error_not_a_traceback(command):
    done = CliRunner().invoke(app, command)
    said = " ".join(done.output.split())
    assert done.exit_code in (1, 2) and "Traceback" not in said, said
    assert "https:// is not storage curate reads or writes" in said, said


def test_a_set_on_the_sources_applies_to_the_inputs_that_replace_them(tmp_path):
    """`-i scans/ --set sources.0.kind=document` (or `.column=` for a parquet list): the --set was applied
    to the config's own sources, which -i then replaced, so it was silently lost."""
    from curate.cli import _load

    cfg = _load(Path("pipelines/local.yaml"), ["sources.0.kind=document", "select.max_boxes=6"],
                ["scans/", "more/list.parquet"])
    assert [(s.type, s.path, s.kind) for s in cfg.sources] == [("dir", "scans/", "document"),
                                                               ("list", "more/list.parquet", "auto")]
    assert cfg.select.max_boxes == 6
    done = CliRunner().invoke(app, ["validate", "pipelines/local.yaml", "-i", str(tmp_path),
                                    "--set", "sources.1.kind=document"])
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and "sources has no item 1" in said, said
