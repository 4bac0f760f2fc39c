"""PNG plots of the corpus histograms (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from curate.stats.models import CorpusStats, Histogram

TITLES = {
    "image_long_side": "Image resolution (longer side)",
    "aspect_ratio": "Aspect ratio",
    "boxes_per_image": "Boxes per image",
    "box_size": "Box size",
    "box_area_fraction": "Box area fraction",
    "caption_words": "Caption length",
    "question_words": "Question length",
    "canvas_long_side": "Canvas size (longer side)",
    "pasted_long_side": "Pasted image size (longer side)",
    "pasted_area_fraction": "Pasted image area / canvas area",
}


def _bars(ax, hist: Histogram, label: str | None = None, alpha: float = 1.0) -> None:
    if not hist.counts:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        return
    edges = hist.edges
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], hist.counts, width=widths, align="edge", alpha=alpha, label=label, edgecolor="white")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_histograms(histograms: dict[str, Histogram], label: str, folder: Path,
                     other: dict[str, Histogram] | None = None, other_label: str = "") -> list[str]:
    """One PNG per histogram (a second set overlaid when given)."""
    plt = _pyplot()
    files = []
    for name, hist in histograms.items():
        fig, ax = plt.subplots(figsize=(5.2, 3.2))
        _bars(ax, hist, label, 0.75 if other else 1.0)
        if other is not None and name in other:
            _bars(ax, other[name], other_label, 0.5)
            ax.legend()
        ax.set_title(TITLES.get(name, name))
        ax.set_xlabel(hist.unit)
        ax.set_ylabel("count")
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=90)
        plt.close(fig)
        files.append(f"{name}.png")
    return files


def write_plots(stats: CorpusStats, folder: Path, other: CorpusStats | None = None) -> list[str]:
    """One PNG per histogram (both corpora overlaid with --compare), plus the OCR/MLLM share."""
    files = write_histograms(stats.histograms, stats.name, folder, other.histograms if other else None,
                             other.name if other else "")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    sources = stats.captions.by_source
    uncaptioned = stats.captions.regions - stats.captions.captioned
    labels = list(sources) + ["no caption"]
    ax.bar(labels, list(sources.values()) + [uncaptioned], color=["#4c72b0", "#55a868", "#c44e52"][: len(labels)])
    ax.set_title("Regions by caption source")
    ax.set_ylabel("regions")
    fig.tight_layout()
    fig.savefig(folder / "caption_sources.png", dpi=90)
    plt.close(fig)
    files.append("caption_sources.png")
    return files
