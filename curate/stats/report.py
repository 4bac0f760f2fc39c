"""`curate stats`: stats.json, report.md and a self-contained report.html (plots and gallery embedded)."""

from __future__ import annotations

from pathlib import Path

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, output_path
from curate.stats.compute import compute_stats
from curate.stats.gallery import write_gallery
from curate.stats.models import CorpusStats
from curate.stats.plots import write_plots
from curate.stats.render import Section, page_html, page_markdown


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(stats: CorpusStats) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the markdown and HTML renderers."""
    c = stats.counts
    out = [
        ("Counts", ["read", "written", "quarantined", "regions", "captioned regions", "wall seconds"],
         [[str(c.read), str(c.written), str(c.quarantined), str(c.regions), str(c.captioned_regions),
           _fmt(stats.wall_seconds, 1)]]),
        ("Per source", ["dataset", "kind", "images", "boxes", "captioned"],
         [[s.dataset, s.kind, str(s.images), str(s.boxes), str(s.captioned)] for s in stats.per_source]),
        ("Boxes by kind and resolution (longer side)", ["kind", "bucket", "images", "boxes", "boxes/img",
                                                         "avg box w x h (px)"],
         [[b.kind, b.bucket, str(b.images), str(b.boxes), _fmt(b.boxes_per_image),
           f"{_fmt(b.avg_box_w, 0)} x {_fmt(b.avg_box_h, 0)}"] for b in stats.buckets]),
        ("PS3 Table 9 (for comparison)", ["source", "kind", "bucket", "images (M)", "boxes (M)", "boxes/img",
                                          "avg box size (as printed; documents' read h x w)"],
         [[t.source, t.kind, t.bucket, _fmt(t.images_m, 0), _fmt(t.boxes_m, 0), _fmt(t.boxes_per_image, 0),
           t.avg_box_size or "-"] for t in stats.ps3_table9]),
        ("Captions", ["regions", "captioned", "by source", "mean words", "not captioned, by reason",
                      "global captions (images)", "global mean words"],
         [[str(stats.captions.regions), str(stats.captions.captioned),
           ", ".join(f"{k}: {v}" for k, v in stats.captions.by_source.items()) or "-",
           _fmt(stats.captions.words_mean, 1),
           ", ".join(f"{k}: {v}" for k, v in stats.captions.dropped.items()) or "-",
           str(stats.captions.global_captions), _fmt(stats.captions.global_words_mean, 1)]]),
        ("Stages", ["stage", "rows", "seconds", "rows/s", "time share", "throughput", "skipped"],
         [[s.stage, str(s.rows), _fmt(s.seconds), _fmt(s.rows_per_second),
           f"{s.time_share:.0%}" if s.time_share is not None else "-",
           ", ".join(f"{k.replace('_per_s', '')}/s {v:.1f}" for k, v in s.rates.items()) or "-",
           s.skipped or ""] for s in stats.stages]),
        ("Quarantine", ["reason", "inputs"],
         [[k, str(v)] for k, v in stats.quarantine_reasons.items()] or [["none", "0"]]),
    ]
    q = stats.questions
    if q is not None:
        out.insert(5, ("Questions (top-down selection fine-tuning data)",
                       ["asked", "kept", "question shards", "mean words", "dropped, by rule"],
                       [[str(q.asked), str(q.kept), str(q.shards), _fmt(q.words_mean, 1),
                         ", ".join(f"{k}: {v}" for k, v in q.dropped.items()) or "-"]]))
    return out


def corpus_sections(stats: CorpusStats, other: CorpusStats | None) -> list[Section]:
    sections: list[Section] = [(None, tables(stats))]
    if other is not None:
        sections.append((f"compared with: {other.name} ({other.output})", tables(other)))
    return sections


def render_markdown(stats: CorpusStats, plots: list[str], other: CorpusStats | None) -> str:
    return page_markdown(f"Corpus report: {stats.name} ({stats.status})", stats.output,
                         corpus_sections(stats, other), plots, stats.gallery)


def render_html(stats: CorpusStats, folder: Path, plots: list[str], other: CorpusStats | None) -> str:
    return page_html(f"Corpus report: {stats.name} ({stats.status})", stats.output, corpus_sections(stats, other),
                     folder, plots, stats.gallery)


def is_canvas_output(out_dir: OutputPath) -> bool:
    import json

    manifest = OutputLayout.at(out_dir).manifest
    return manifest.exists() and json.loads(manifest.read_text()).get("kind") == "canvas"


def local_report_dir(out_dir: str | OutputPath) -> Path:
    """Where the report is drawn: OUT/stats for a local output; for one on object storage a local
    ``NAME-stats`` folder (plots are drawn to local files; the report is then copied to OUT/stats)."""
    layout = OutputLayout.at(out_dir)
    return Path(f"{layout.root.name}-stats") if layout.remote else layout.stats_dir


def write_report(out_dir: str | OutputPath, compare: str | OutputPath | None = None, gallery: int = 6,
                 folder: Path | None = None) -> Path:
    """Write {stats.json, report.md, report.html, *.png} to ``folder`` (default: local_report_dir) and,
    for an output on object storage, a copy to OUT/stats; returns the local report.md path."""
    out = output_path(out_dir)
    folder = folder or local_report_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    if is_canvas_output(out):
        from curate.stats.canvas import write_canvas_report

        report = write_canvas_report(out, folder, gallery)
    else:
        stats, _ = compute_stats(out)
        other = compute_stats(compare)[0] if compare else None
        plots = write_plots(stats, folder, other)
        stats.gallery = write_gallery(out, folder, n=gallery) if gallery else []
        (folder / "stats.json").write_text(stats.model_dump_json(indent=2))
        (folder / "report.md").write_text(render_markdown(stats, plots, other))
        (folder / "report.html").write_text(render_html(stats, folder, plots, other))
        report = folder / "report.md"
    layout = OutputLayout.at(out)
    if layout.remote:
        for file in sorted(folder.iterdir()):
            (layout.stats_dir / file.name).write_bytes(file.read_bytes())
    return report
