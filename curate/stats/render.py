"""Report pages from tables, plots and gallery images: markdown, and self-contained HTML (PNGs inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

Section = tuple[str | None, list[tuple[str, list[str], list[list[str]]]]]  # (heading, tables)


def page_markdown(title: str, output: str, sections: list[Section], plots: list[str], gallery: list[str]) -> str:
    lines = [f"# {title}", "", f"Output: `{output}`", ""]
    for heading, section_tables in sections:
        if heading:
            lines += [f"# {heading}", ""]
        for name, header, rows in section_tables:
            lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if gallery:
        lines += ["## Gallery", ""] + [f"![{g}]({g})" for g in gallery] + [""]
    return "\n".join(lines)


def _img(folder: Path, name: str, css: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode()
    return f'<img class="{css}" alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def page_html(title: str, output: str, sections: list[Section], folder: Path, plots: list[str],
              gallery: list[str]) -> str:
    """A self-contained page: tables, then plots and gallery embedded as base64 PNGs."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>Output: <code>{html.escape(output)}</code></p>"]
    for heading, section_tables in sections:
        if heading:
            parts.append(f"<h1>{html.escape(heading)}</h1>")
        for name, header, rows in section_tables:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<h2>{html.escape(name)}</h2><table><tr>{head}</tr>{body}</table>")
    parts.append('<h2>Plots</h2><div class="grid">' + "".join(_img(folder, p, "plot") for p in plots) + "</div>")
    if gallery:
        parts.append('<h2>Gallery</h2><div class="gallery">'
                     + "".join(_img(folder, g, "sample") for g in gallery) + "</div>")
    # Lets a headless browser test tell that every embedded image decoded.
    script = ("window.addEventListener('load', () => { const imgs = [...document.images];"
              " document.body.dataset.imagesTotal = imgs.length;"
              " document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
              # drawn at another aspect ratio than the picture's own (more than 2% off)
              " document.body.dataset.imagesDistorted = imgs.filter(i => i.naturalWidth > 0 && Math.abs("
              "(i.clientWidth / i.clientHeight) / (i.naturalWidth / i.naturalHeight) - 1) > 0.02).length; });")
    style = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}"
             "table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left;font-size:14px}th{background:#f3f3f3}.grid{display:grid;"
             "grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}.plot{width:100%}"
             ".gallery{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
             ".sample{max-width:640px;height:auto;border:1px solid #ddd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>curate stats: {html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}<script>{script}</script></body></html>")
