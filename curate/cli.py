"""curate command line (typer)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Turn raw high-resolution images into region-caption corpora (WebDataset shards) with Ray Data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)


def _help_shows_what_options_take() -> None:
    """typer's help shows each option's Python type: a flag as ``<bool>``, which reads as
    ``--verify true`` (an error: a flag takes no value), and a repeatable option as ``<list[str]>``
    (it takes one value per use). Show a flag with no type and a repeatable option with its one
    value's type; the help text says where an option repeats."""
    import re

    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        if self.is_flag:
            return None
        text = shown(self, ctx)
        return re.sub(r"^<list\[(.*)\]>", r"<\1>", text) if text else text

    TyperOption.display_type_rich = display_type_rich


_help_shows_what_options_take()


# what a bug report needs beside curate's own version
REPORTED_LIBRARIES = ("ray", "torch", "transformers", "vllm", "pillow", "pyarrow", "webdataset", "pydantic")


def _print_version(asked: bool) -> None:
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    import curate

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    typer.echo(f"curate {curate.__version__}")
    typer.echo(f"Python {sys.version.split()[0]}; " + ", ".join(map(installed, REPORTED_LIBRARIES)))
    raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="print curate's version and its main libraries' (for a bug report), then exit")] = False) -> None:
    """The options before a command (the app's help is the Typer's own)."""


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _load(pipeline: Path, overrides: list[str], inputs: list[str] | None = None):
    """The pipeline config, its sources replaced by ``inputs`` (``-i``) where given, then ``overrides``."""
    from curate.config import ConfigError, load_config

    sources = [dict(zip(("type", "path"), _input_source(text))) for text in inputs or []]
    try:
        return load_config(pipeline, overrides, sources)
    except ConfigError as e:
        _fail(str(e))


def _committed_so_far(output: str) -> str:
    """What an interrupted run (corpus or canvas) leaves, from its manifest's counts (none: it stopped
    before its first commit and gave the output back)."""
    from curate.io.layout import OutputLayout

    try:
        written = json.loads(OutputLayout.at(output).manifest.read_text())["counts"]["written"]
    except (OSError, ValueError, KeyError, TypeError):
        written = 0
    if not written:
        return f"no sample was committed yet in {output}"
    return f"{written} samples are committed in {output}"


INPUTS = Annotated[Optional[list[str]], typer.Option(
    "--input", "-i", help="replace the config's sources with these directories, globs, lists (.txt, .parquet), "
                          "tar shards or image files (repeatable; kind 'auto')")]


def _input_source(path: str) -> tuple[str, str]:
    """(source type, path) for one ``--input``, told by its form: tar shards, a list file, a glob,
    one local image file (a glob matching only itself, escaped: a name such as ``shot [1].png``
    would be read as a pattern), else a directory."""
    import glob

    from curate.config.models import expand_home
    from curate.io.sources import is_image_name

    path = expand_home(path)  # `-i '~/photo.jpg'` or `--input=~/photos`: no shell expanded it
    if path.endswith(".tar") or ".tar" in path and any(c in path for c in "*{"):
        return "webdataset", path
    if path.endswith((".txt", ".parquet")):
        return "list", path
    if os.path.isfile(path) and is_image_name(path):
        return "glob", glob.escape(path)
    if any(c in path for c in "*?["):
        return "glob", path
    return "dir", path


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML, e.g. pipelines/local.yaml")],
    input: INPUTS = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="output directory (output.path)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a config key: --set select.max_boxes=6 (repeatable)")] = None,
    address: Annotated[Optional[str], typer.Option(
        "--address", help="join a Ray cluster (default: RAY_ADDRESS, else start local Ray)")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="on resume, also check every committed shard's sha256 (sizes are always checked)")] = False,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="accept sources with no input image")] = False,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, help="only the first N listed inputs: a trial run of a config on a large corpus; the "
                               "same command without --limit continues the output with the rest")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Ray Data's periodic status too")] = False,
) -> None:
    """Run (or resume) a pipeline: ingest -> masks -> select -> caption -> shards.

    Re-running the same command on the same output resumes: inputs already committed are skipped,
    committed shards are checked first (a missing or damaged one is redone), and a killed run never
    leaves a partial shard. curate writes only into a new or empty directory or its own output, one
    run at a time, and never into a directory that holds or sits inside an input.
    """
    overrides = list(set_ or [])
    if output:
        overrides.append(f"output.path={output}")
    if address:
        overrides.append(f"ray.address={address}")
    if verbose:
        overrides.append("ray.verbose=true")
    cfg = _load(pipeline, overrides, input)

    from curate.backends import BackendUnavailable
    from curate.io.lock import OutputLocked
    from curate.io.ownership import OutputRefused
    from curate.io.sources import SourceError
    from curate.pipeline import IncompleteRun, PlanError, run_pipeline

    progress, on_start, on_progress, on_status = _progress_bar("images", cfg.ray.progress, cfg.ray.progress_log_every_s)

    def on_note(note: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)

    from curate.io import interrupt

    interrupt.install()
    with _ray_quietly(str(cfg.output.path), verbose):
        try:
            with progress:
                result = run_pipeline(cfg, on_progress=on_progress, on_start=on_start, verify=verify,
                                      on_note=on_note, allow_empty=allow_empty, on_status=on_status, limit=limit)
            interrupt.ignore_further()  # the run is committed: a late Ctrl-C must not cut Ray's shutdown short
        except KeyboardInterrupt:
            interrupt.ignore_further()
            console.print(f"[yellow]interrupted[/]: {_committed_so_far(str(cfg.output.path))}; "
                          "run the same command again to resume", highlight=False)
            raise typer.Exit(130) from None
        except (BackendUnavailable, OutputRefused, OutputLocked, SourceError, PlanError, IncompleteRun) as e:
            _fail(str(e))
        except OSError as e:  # unwritable output, full disk: committed shards stay, nothing partial is left
            _fail(f"cannot write the output {cfg.output.path}: {e.strerror or e}"
                  f"{' (' + e.filename + ')' if getattr(e, 'filename', None) else ''}; "
                  "committed shards are kept and the same command resumes")
    _print_summary(result.output)
    if limit is not None:
        console.print(f"[yellow]a trial:[/] the first {limit} listed inputs (--limit); the same command without "
                      "--limit continues this output with the rest", highlight=False)


@contextmanager
def _ray_quietly(output: str, verbose: bool):
    """Quiet by default: for the block, Ray's native error lines and warnings go to a log (moved to
    OUT/logs/ at the end, and where it went is said), curate's own warnings stay on the terminal."""
    from curate.io.fs import local_path
    from curate.io.runlog import keep_logs, stderr_to_file
    from curate.runner import RAY_SESSION

    RAY_SESSION["dir"] = None
    run_log = None
    try:
        with (nullcontext() if verbose else stderr_to_file(console)) as run_log, _curate_warnings_on(console):
            yield
    finally:
        if run_log is not None:
            # Only a run that got as far as starting Ray (it claimed the output) writes into it: a
            # refused run leaves the output exactly as it was.
            root = local_path(output) if RAY_SESSION["dir"] else None
            where = keep_logs(run_log, Path(root) if root else None, RAY_SESSION["dir"])
            if where is not None:
                console.print(f"[dim]logs (Ray's warnings, worker logs): {where}[/]", highlight=False)


@contextmanager
def _curate_warnings_on(console_):
    """curate's own warnings stay on the terminal when stderr goes to the run's log."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console_, show_time=False, show_path=False, level=logging.WARNING)
    logger = logging.getLogger("curate")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _progress_bar(unit: str, enabled: bool, log_every_s: float = 30.0):
    """A rich progress bar and the callbacks that drive it: rows through the last stage (in flight
    to the writers) and committed rows, a rate and ETA smoothed over the last 30 s, and what each
    stage is doing (loading its model, on its first batch, rows and rows/s). Where the console is
    not a terminal the bar is drawn only at the end, so the same figures go out as a plain line
    every ``log_every_s`` seconds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from curate.io.progress import LineEvery, SmoothedRate, describe, log_line

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                        TextColumn("{task.fields[note]}"), console=console, disable=not enabled,
                        # writes to sys.stderr go to fd 2 (the run's log), not through the bar
                        redirect_stderr=False, redirect_stdout=False)
    task: dict = {"committed": 0, "processed": 0, "rate": SmoothedRate(), "stage_rates": {}}
    lines = LineEvery(log_every_s) if enabled and not console.is_terminal else None

    def on_start(pending: int, skipped: int) -> None:
        if skipped:
            console.print(f"resuming: {skipped} inputs already done, {pending} to go")
        task["total"] = pending
        if "id" in task:  # a phase was shown before the listing's count was known
            progress.update(task["id"], total=pending)
        else:
            task["id"] = progress.add_task(unit, total=pending, rate="", eta="", note="")

    def refresh(note: str | None = None) -> None:
        if note is not None:
            task["note"] = note
        if "id" not in task:
            on_start(0, 0)
        if task.get("total") is None:
            progress.update(task["id"], note=task.get("note", ""))
            return
        done = max(task["committed"], task["processed"])
        rate = task["rate"].add(done)
        left = max(task["total"] - done, 0)
        fields = {"rate": f"{rate:.2f} {unit}/s" if rate else "",
                  "eta": f"ETA {int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate and left else "",
                  "note": task.get("note", "") + (f" | committed {task['committed']}" if task.get("stages") else "")}
        progress.update(task["id"], completed=done, total=max(task["total"], done), **fields)
        if lines is not None and lines.due():
            console.print(log_line(lines.elapsed(), unit, done, task["total"], list(fields.values())),
                          highlight=False, soft_wrap=True, markup=False)

    def on_progress(done: int, total: int) -> None:
        task["committed"], task["total"] = done, total
        refresh()

    def on_status(status) -> None:
        if isinstance(status, str):  # a phase: starting Ray, listing inputs, ...
            if "id" not in task:
                task["id"] = progress.add_task(unit, total=None, rate="", eta="", note="")
            refresh(status)
            return
        if status:
            task["stages"] = True
            task["processed"] = list(status.values())[-1]["rows"]
            rates = {name: task["stage_rates"].setdefault(name, SmoothedRate()).add(s["rows"])
                     for name, s in status.items()}
            refresh(describe(status, {k: v for k, v in rates.items() if v}))

    return progress, on_start, on_progress, on_status


augment_app = typer.Typer(help="Make fine-tuning data from other datasets (PS3 Fig. 8).", no_args_is_help=True)
app.add_typer(augment_app, name="augment")


@augment_app.command("canvas")
def augment_canvas(
    config: Annotated[Path, typer.Argument(help="canvas YAML, e.g. pipelines/canvas.yaml")],
    input: Annotated[Optional[str], typer.Option(
        "--input", "-i", help="the VQA source instead of the config's: a LLaVA JSON (.json) or a parquet table "
                              "(.parquet, HF datasets' too)")] = None,
    images: Annotated[Optional[str], typer.Option(
        "--images", help="with a LLaVA JSON: the folder its 'image' paths are relative to (default: the JSON's "
                         "folder)")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="output directory (output.path)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a key: --set canvas.long_side=[2048,4096] (repeatable)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Ray's own lines too")] = False,
) -> None:
    """Paste low-res VQA images (LLaVA JSON or a parquet table) onto 1K-4K canvases; QA is inherited
    and the pasted box recorded. Writes WebDataset shards + index + manifest; re-running resumes."""
    from curate.augment.config import load_canvas_config
    from curate.augment.run import run_canvas
    from curate.config import ConfigError

    overrides = list(set_ or []) + _vqa_input_overrides(input, images) + ([f"output.path={output}"] if output else [])
    try:
        cfg = load_canvas_config(config, overrides)
    except ConfigError as e:
        _fail(str(e))
    from curate.io import interrupt

    progress, _, on_progress, _ = _progress_bar("canvases", cfg.ray.progress, cfg.ray.progress_log_every_s)
    interrupt.install()
    with _ray_quietly(str(cfg.output.path), verbose):
        try:
            with progress:
                result = run_canvas(cfg, on_progress=on_progress)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]: {_committed_so_far(str(cfg.output.path))}; "
                          "run the same command again to resume", highlight=False)
            raise typer.Exit(130) from None
        except (OSError, ValueError, RuntimeError) as e:  # OutputRefused and OutputLocked say which output
            _fail(str(e) if str(cfg.output.path) in str(e) else f"{cfg.source.path}: {e}")
    Console().print(f"[green]canvas[/] read {result.read} = written {result.written} + quarantined "
                    f"{result.quarantined} (skipped as done: {result.skipped_done}) -> {result.output}")


def _vqa_input_overrides(path: str | None, images: str | None) -> list[str]:
    """The config keys that ``augment canvas -i PATH [--images DIR]`` sets, the format told by the name."""
    if path is None:
        if images is not None:
            _fail("--images goes with --input (a LLaVA JSON); or set source.images")
        return []
    formats = {".json": "llava", ".parquet": "table"}
    chosen = formats.get(os.path.splitext(path)[1].lower())
    if chosen is None:
        _fail(f"--input {path}: a LLaVA JSON (.json) or a parquet table (.parquet) is a VQA source")
    if images is not None and chosen != "llava":
        _fail("--images goes with a LLaVA JSON: a table holds its images or their paths")
    return [f"source.format={chosen}", f"source.path={path}", f"source.images={images if images else 'null'}"]


export_app = typer.Typer(help="Write a finished corpus in the formats other trainers read.", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _run_export(export, **kwargs):
    """Run an exporter with a progress bar over shards; its refusals are clear errors."""
    from curate.io.lock import OutputLocked
    from curate.io.ownership import OutputRefused

    progress, _, on_progress, _ = _progress_bar("shards", True)
    try:
        with progress:
            return export(on_progress=on_progress, **kwargs)
    except (FileNotFoundError, OutputRefused, OutputLocked, ValueError) as e:
        _fail(str(e))


@export_app.command("ps3")
def export_ps3_cmd(
    output: Annotated[str, typer.Argument(help="a finished curate corpus (a directory or s3:// / gs:// URI)")],
    dest: Annotated[str, typer.Argument(help="new or empty directory or URI for the export (or one to resume)")],
    what: Annotated[str, typer.Option("--what", help="a corpus's regions (local captions) or questions (each "
                                                     "question as its region's text); canvas outputs are detected")]
    = "regions",
) -> None:
    """PS3's own pre-training format (NVlabs/PS3, dataset type webdataset_separate_image_text_box):
    `DEST/images/*.tar` and `DEST/text_box/*.tar` in lock-step, only captioned regions, absolute-pixel
    boxes, global captions as global_text. Resumable: run it again after an interruption. Prints the
    flags of PS3's trainer that read the export."""
    from curate.export.ps3 import export_ps3

    if what not in ("regions", "questions"):
        _fail(f"--what {what!r}: choose regions or questions")
    result = _run_export(export_ps3, source=output, dest=dest, what=what)
    c = result.counts
    out = Console()
    out.print(f"[green]exported[/] {c['samples']} samples ({c['regions']} captioned regions, {c['global_text']} "
              f"global captions) in {result.shards} shard pairs -> {dest}; left out: "
              f"{c['skipped_no_caption']} with no caption, {c['skipped_undecodable']} undecodable", highlight=False)
    if not c["samples"] and what == "regions":
        _fail("nothing to train on: no sample has a caption. Natural images are captioned by an MLLM (set "
              "caption.natural to an hf or vllm backend with a model and run again; the offline default records "
              "them as skipped); documents get their OCR text", code=1)
    if not c["samples"]:
        _fail("nothing to train on: no sample was exported", code=1)
    out.print("PS3 training flags (NVlabs/PS3 train/, open_clip_train.main):", highlight=False)
    out.print("  " + " ".join(shlex.quote(flag) for flag in result.flags()), highlight=False, soft_wrap=True)


@export_app.command("llava")
def export_llava_cmd(
    output: Annotated[str, typer.Argument(help="a curate corpus with question shards, or a canvas output")],
    dest: Annotated[str, typer.Argument(help="new or empty directory or URI for the export (or one to resume)")],
    box_in: Annotated[str, typer.Option("--box-in", help="where the region goes in the text: answer, question "
                                                         "or none (Qwen-VL `<box>(x0,y0),(x1,y1)</box>`, 0-1000)")]
    = "answer",
) -> None:
    """LLaVA conversation JSON + image folder: region questions answered by their captions (from a
    corpus's question shards), or canvas samples with their inherited QA (from a canvas output)."""
    from curate.export.llava import export_llava

    if box_in not in ("answer", "question", "none"):
        _fail(f"--box-in {box_in!r}: choose answer, question or none")
    result = _run_export(export_llava, source=output, dest=dest, box_in=box_in)
    Console().print(f"[green]exported[/] {result.counts['entries']} conversations, {result.counts['images']} images "
                    f"-> {result.dest / 'llava.json'}", highlight=False)


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="train YAML, e.g. pipelines/train_local.yaml")],
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a key: --set optim.steps=200 (repeatable)")] = None,
    eval_: Annotated[bool, typer.Option("--eval", help="then evaluate selection on eval.shards "
                                                       "(as `curate evaluate`)")] = False,
) -> None:
    """PS3-style pre-training on curate shards: local high-res features of selected patches vs local
    captions mixed with low-res features vs global captions (sigmoid contrast), and top-down/bottom-up
    selection supervised by the boxes. Resumes from OUT/last.pt; under torchrun it trains with DDP."""
    from curate.config import ConfigError
    from curate.train.config import load_train_config
    from curate.train.loop import train

    try:
        cfg = load_train_config(config, list(set_ or []))
    except ConfigError as e:
        _fail(str(e))
    if eval_ and not cfg.eval.shards:
        _fail(f"{config}: --eval needs eval.shards (held-out shards), e.g. --set 'eval.shards=[held/*.tar]'")

    def on_log(row: dict) -> None:
        recall = "/".join(f"{row[k]:.2f}" if k in row else "-" for k in ("recall_top_down", "recall_bottom_up"))
        parts = [f"step {row['step']:>6}", f"loss {row['total']:.4f}",
                 *(f"{k} {row[k]:.4f}" for k in ("local", "global") if k in row),
                 f"recall td/bu {recall}", f"lr {row['lr']:.2e}", f"{row['samples_per_s']:.1f} img/s"]
        if "gpu_mem_gib" in row:
            parts.append(f"{row['gpu_mem_gib']} GiB")
        console.print("  ".join(parts), highlight=False)

    try:
        train(cfg, on_log=on_log)
    except (FileNotFoundError, RuntimeError) as e:
        _fail(str(e))
    console.print(f"[green]done[/]: checkpoint {Path(cfg.out) / 'last.pt'}, log {Path(cfg.out) / 'log.jsonl'}")
    if eval_:
        _print_evaluation(cfg, None)


def _print_evaluation(cfg, checkpoint: Path | None) -> None:
    from curate.train.evaluate import evaluate

    try:
        report = evaluate(cfg, checkpoint)
    except (FileNotFoundError, RuntimeError) as e:
        _fail(str(e))
    console.print(f"selection on {report['images']} held-out images, {report['regions']} regions, top "
                  f"{report['select_frac']:.0%} of low-res patches: recall top-down {report['recall_top_down']}, "
                  f"bottom-up {report['recall_bottom_up']} (random scores: {report['recall_random']})",
                  highlight=False)
    if report["hires_recall_per_scale"]:
        console.print(f"high-res patches encoded ({report['hires_select_k']} per scale {report['hires_scales']}): "
                      f"recall of box patches {report['hires_recall_per_scale']}", highlight=False)
    console.print(f"report: {Path(cfg.out) / 'eval' / 'eval.json'}" +
                  (f", picture: {report['picture']}" if "picture" in report else ""))


@app.command("evaluate")
def evaluate_cmd(
    config: Annotated[Path, typer.Argument(help="the train YAML the checkpoint was trained with")],
    shards: Annotated[Optional[list[str]], typer.Option(
        "--shards", help="held-out shards (globs, URLs; repeatable); default: eval.shards")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="default: OUT/last.pt")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a key (repeatable)")] = None,
) -> None:
    """Selection recall on held-out shards (PS3 Table 7): top-down and bottom-up recall of the boxes'
    patches among the top eval.select_frac by predicted score, beside random scores, and the recall
    of the high-res patches the model encodes; draws predicted score maps with the boxes."""
    from curate.config import ConfigError
    from curate.train.config import load_train_config

    overrides = list(set_ or []) + ([f"eval.shards={json.dumps(list(shards))}"] if shards else [])
    try:
        cfg = load_train_config(config, overrides)
    except ConfigError as e:
        _fail(str(e))
    _print_evaluation(cfg, checkpoint)


def _print_summary(output: str) -> None:
    from curate.io.layout import OutputLayout
    from curate.io.manifest import read_manifest

    m = read_manifest(OutputLayout.at(output))
    c = m.counts
    out = Console()
    out.print(f"[bold green]done[/] {output}: read {c.read} = written {c.written} + quarantined {c.quarantined}; "
              f"{c.regions} regions, {c.captioned_regions} captioned, {len(m.shards)} shards")
    table = Table("stage", "rows", "seconds", "rows/s", "outcomes / skipped")
    for name, s in m.stages.items():
        rate = f"{s.rows / s.seconds:.2f}" if s.seconds else "-"
        note = s.skipped or ", ".join(f"{k}={v}" for k, v in sorted(s.counts.items()))
        table.add_row(name, str(s.rows), f"{s.seconds:.1f}", rate, note)
    out.print(table)
    if m.quarantine:
        out.print(f"quarantined ({len(m.quarantine)}), first few:")
        for q in m.quarantine[:5]:
            out.print(f"  {q.uri}: {q.reason.value}: {q.detail}", highlight=False)


@app.command()
def validate(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML to check")],
    input: INPUTS = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a key, as in `run` (repeatable)")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="output directory, as in `run`")] = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="accept sources with no input image")] = False,
    address: Annotated[Optional[str], typer.Option(
        "--address", help="as in `run`: a cluster's GPUs are its own, so no local GPU is asked for")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="as in `run` (checks the same)")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="as in `run` (checks the same)")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="as in `run` (checks the same)")] = False,
) -> None:
    """Check a pipeline YAML and what its run needs, without starting it: the backends and their
    packages, checkpoint files, that each source exists and holds inputs, a GPU where a stage asks
    for one, and that the output is writable and ours. Exits 1 naming each problem.

    Takes every option of `run`: put `validate` in place of `run` in a command to check that run."""
    overrides = list(set_ or []) + ([f"output.path={output}"] if output else [])
    if address:
        overrides.append(f"ray.address={address}")
    cfg = _load(pipeline, overrides, input)
    from curate.preflight import preflight

    problems = preflight(cfg, allow_empty=allow_empty)
    if problems:
        for problem in problems:
            console.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False)
        console.print(f"{pipeline}: the config is valid, but the run would fail or crawl: {len(problems)} "
                      "problem(s) above", highlight=False)
        raise typer.Exit(1)
    Console().print(f"[green]valid[/] {pipeline}: {cfg.name} (config sha256 {cfg.sha256()[:12]}); its backends, "
                    "sources, GPU needs and output check out", highlight=False)


@app.command()
def schema(
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the JSON Schemas")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="exit 1 if the files differ from the models")] = False,
) -> None:
    """Write JSON Schemas of the records and the pipeline config (generated from the pydantic models)."""
    from curate.schemas import render_schemas

    stale = []
    for name, text in render_schemas().items():
        path = out_dir / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            Console().print(f"wrote {path}")
    if stale:
        _fail("stale schemas (run `curate schema`): " + ", ".join(stale), code=1)


@app.command()
def stats(
    output: Annotated[str, typer.Argument(help="a curate output: a directory or an s3:// / gs:// URI")],
    compare: Annotated[Optional[str], typer.Option(help="another output to show side by side")] = None,
    gallery: Annotated[int, typer.Option(help="random samples drawn with boxes and captions (0: none)")] = 6,
    print_report: Annotated[bool, typer.Option("--print", help="also print the whole report.md here")] = False,
    report_dir: Annotated[Optional[Path], typer.Option(
        help="local folder for the report (default: OUT/stats; NAME-stats here for an object-storage OUT)")] = None,
) -> None:
    """Report on a corpus: counts per source and kind, boxes per resolution bucket beside PS3 Table 9,
    histograms, caption sources and drops, quarantine reasons, stage throughput, a gallery.

    Numbers come from index.parquet and manifest.json only; shards are opened for the gallery alone.
    Writes report.md, report.html (self-contained) and stats.json to OUT/stats; for an output on object
    storage they are drawn in a local folder and copied to OUT/stats.
    """
    from curate.io.fs import UnsupportedStorage
    from curate.stats.report import write_report

    try:
        report = write_report(output, compare=compare, gallery=gallery, folder=report_dir)
    except (FileNotFoundError, UnsupportedStorage) as e:
        _fail(str(e))
    if print_report:
        Console().print(report.read_text(), markup=False, highlight=False)
    else:
        _print_counts(output)
    Console().print(f"[green]wrote[/] {report}, {report.with_suffix('.html')} (open it in a browser) and stats.json")


def _print_counts(output: str) -> None:
    """The report's first lines: what the corpus holds."""
    from curate.io.layout import OutputLayout

    manifest = json.loads(OutputLayout.at(output).manifest.read_text())
    c = manifest["counts"]
    extra = f"; {c['regions']} regions, {c['captioned_regions']} captioned" if "regions" in c else ""
    Console().print(f"{output}: {manifest.get('name')} ({manifest.get('status')}): read {c['read']} = written "
                    f"{c['written']} + quarantined {c['quarantined']}{extra}", highlight=False)


@app.command()
def inspect(
    output: Annotated[str, typer.Argument(help="a curate output: a directory or an s3:// / gs:// URI")],
    key: Annotated[Optional[str], typer.Argument(
        help="a sample's key (20 hex digits) or a prefix of it, or the input it came from (its path as the run "
             "listed it, the end of that path, such as the file's name, or the file's whole path); left out, the "
             "first samples are listed")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many samples to list without a KEY")] = 20,
) -> None:
    """Print one sample's record (KEY.json), read from its shard by offset via the index; without
    a KEY, list the output's first samples (key, kind, size, regions, input)."""
    from curate.io.reader import find_record, list_samples

    try:
        if key is None:
            total, samples = list_samples(output, limit)
        else:
            record = find_record(output, key)
    except (FileNotFoundError, LookupError, ValueError) as e:
        _fail(str(e))
    if key is not None:
        sys.stdout.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return
    shown = f", the first {len(samples)}" if total > len(samples) else ""
    table = Table(title=f"{escape(output)}: {total} samples{shown}", title_justify="left")
    cells = [_listed_cells(s) for s in samples]
    for column in (cells[0] if cells else {"key": ""}):
        # the input's whole path, folded: it is what a user looks for
        table.add_column(column, no_wrap=column != "input", overflow="fold")
    for row in cells:
        table.add_row(*row.values())
    console.print(table)
    console.print(f"one sample's record: curate inspect {output} KEY", highlight=False, markup=False)


def _listed_cells(sample: dict) -> dict[str, str]:
    """One listed sample as the table's cells: width and height as a size, the index's names made
    plain (``n_regions`` as regions, ``uri`` as input)."""
    cells = {}
    for name, value in sample.items():
        if name == "width":
            cells["size"] = f"{value}x{sample['height']}"
        elif name != "height":
            cells[{"n_regions": "regions", "uri": "input"}.get(name, name)] = escape(str(value))
    return cells


@app.command()
def cat(
    uri: Annotated[str, typer.Argument(help="a file: a local path or an s3:// / gs:// URI")],
) -> None:
    """Copy one file (a shard, the index) to stdout, from local disk or object storage.

    Lets any WebDataset reader stream a corpus on object storage with the credentials and endpoint
    curate uses: ``webdataset.WebDataset("pipe:curate cat s3://bucket/out/shards/000000.tar")``.
    """
    from curate.io.fs import UnsupportedStorage
    from curate.io.objpath import open_sequential, output_path

    try:
        path = output_path(uri)
    except UnsupportedStorage as e:
        _fail(str(e))
    try:
        with open_sequential(path) as f:
            while chunk := f.read(1 << 20):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except FileNotFoundError:
        _fail(f"{uri}: no such file")
    except BrokenPipeError:  # the reader stopped early (head, a sampled shard): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command()
def samples(
    out_dir: Annotated[Path, typer.Argument(help="where to write the sample images")] = Path("data/samples"),
    count: Annotated[int, typer.Option(help="number of images (half documents, half photos)")] = 16,
    vqa: Annotated[bool, typer.Option(
        "--vqa", help="write low-res VQA samples instead (llava.json + images/ + vqa.parquet) for "
                      "`curate augment canvas`")] = False,
) -> None:
    """Generate the offline sample set: rendered document pages and upscaled skimage photos (1K-4K)."""
    from curate.samples import generate_samples, generate_vqa_samples

    path = generate_vqa_samples(out_dir, count) if vqa else generate_samples(out_dir, count)
    Console().print(f"[green]wrote[/] {count} {'VQA samples' if vqa else 'images'} to {path}")


if __name__ == "__main__":
    app()
