"""Which directories curate may write into: its own outputs, never someone else's data.

An output is ours when it holds ``.curate/output.json`` (the ownership marker, written when curate
creates or first claims an empty directory). A non-empty directory without the marker is refused,
with one exception: an output made by an earlier curate version (only curate's own names at its
top level and a curate manifest) is adopted. An output that overlaps an input (the same
directory, one inside the other) is refused whatever it holds, since a resume would read its own
files back or clean up the inputs.
"""

from __future__ import annotations

import glob as globlib
import json
from pathlib import Path, PurePosixPath

from curate.io.fs import local_path, scheme_of
from curate.io.layout import OutputLayout, atomic_write_bytes
from curate.io.objpath import OutputPath

OWN_TOP_LEVEL = {".curate", "shards", "questions", "parts", "index.parquet", "manifest.json", "stats",
                 "quarantine.parquet", "logs"}
MARKER_FORMAT = "curate-output"


class OutputRefused(RuntimeError):
    """The output cannot be used: it belongs to someone else, to another config, or overlaps an input."""


class OutputConflict(OutputRefused):
    """The output holds a run made with another config (or of another kind)."""


def _fixed_prefix(parts: tuple[str, ...]) -> list[str]:
    fixed = []
    for part in parts:
        if globlib.has_magic(part):
            break
        fixed.append(part)
    return fixed


def input_root(path: str) -> Path | None:
    """The local directory or file a source reads below: a glob's fixed prefix, else the path itself."""
    path = local_path(path)
    if path is None:
        return None
    fixed = _fixed_prefix(Path(path).parts)
    return Path(*fixed).resolve() if fixed else Path.cwd()


def _place(text: str | OutputPath) -> tuple[str, PurePosixPath]:
    """(scheme, path) to compare an output with an input: local paths resolved, URIs as bucket/key."""
    if isinstance(text, Path) or (isinstance(text, str) and local_path(text) is not None):
        root = input_root(str(text))
        return "", PurePosixPath(str(root))
    uri = str(text).split("?", 1)[0]
    scheme = scheme_of(uri) or ""
    rest = uri.split("://", 1)[1]
    return scheme, PurePosixPath("/", *_fixed_prefix(tuple(p for p in rest.split("/") if p)))


def _within(inner: PurePosixPath, outer: PurePosixPath) -> bool:
    return inner == outer or outer in inner.parents


def check_no_overlap(root: OutputPath, input_paths: list[str]) -> None:
    out_scheme, out = _place(root)
    for text in input_paths:
        scheme, source = _place(text)
        if scheme != out_scheme:
            continue
        if _within(out, source) or _within(source, out):
            where = "output inside the input" if _within(out, source) else "input inside the output"
            raise OutputRefused(
                f"{root}: the output overlaps the input {text} ({where}). "
                "A run reads its inputs and cleans up its output, so the two must be apart: "
                "choose an --output outside every input; nothing was changed.")


def read_marker(layout: OutputLayout) -> dict | None:
    try:
        data = json.loads(layout.marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OutputRefused(f"{layout.marker}: ownership marker unreadable ({e}); "
                            "restore it or choose another --output") from e
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        raise OutputRefused(f"{layout.marker}: not a curate ownership marker; choose another --output")
    return data


def write_marker(layout: OutputLayout, kind: str, config_sha256: str) -> dict:
    marker = {"format": MARKER_FORMAT, "version": 1, "kind": kind, "config_sha256": config_sha256}
    layout.meta_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.marker, json.dumps(marker, indent=2).encode())
    return marker


def _legacy_output_hash(root: OutputPath, entries: list[str]) -> str | None:
    """config_sha256 of an output written by an earlier curate (before the marker), else None."""
    if not set(entries) <= OWN_TOP_LEVEL or "manifest.json" not in entries:
        return None
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    digest = manifest.get("config_sha256") if isinstance(manifest, dict) else None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def check_claim(layout: OutputLayout, kind: str, config_sha256: str,
                input_paths: list[str]) -> tuple[dict | None, bool]:
    """Whether ``layout.root`` may be written, without writing: raises OutputRefused, else returns
    its marker (None when the directory is new, empty, or an earlier version's output to adopt)
    and whether it is new or empty."""
    root = layout.root
    check_no_overlap(root, input_paths)
    if root.exists() and not root.is_dir():
        raise OutputRefused(f"{root}: exists and is not a directory; choose another --output")
    entries = sorted(p.name for p in root.iterdir()) if root.exists() else []
    marker = read_marker(layout) if entries else None
    if marker is None and entries:
        legacy_hash = _legacy_output_hash(root, entries)
        if legacy_hash is None:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputRefused(
                f"{root}: the directory is not empty ({shown}) and was not written by curate "
                f"(not a curate output: no {layout.marker.relative_to(root)}). curate writes only into new or "
                "empty directories or its own outputs: choose another --output; nothing was changed.")
        if legacy_hash != config_sha256:
            raise _conflict(root, legacy_hash, config_sha256)
    if marker is not None:
        if marker.get("kind") != kind:
            raise OutputConflict(f"{root}: holds a {marker.get('kind')} output, not a {kind} one; "
                                 "choose another --output")
        if marker.get("config_sha256") != config_sha256:
            raise _conflict(root, marker.get("config_sha256", "?"), config_sha256)
    return marker, not entries


def claim_output(layout: OutputLayout, kind: str, config_sha256: str, input_paths: list[str]) -> tuple[dict, bool]:
    """Make sure ``layout.root`` is ours to write (creating and marking it when new or empty), or
    raise OutputRefused before anything is written. Returns the marker and whether this call
    claimed a new or empty directory."""
    marker, empty = check_claim(layout, kind, config_sha256, input_paths)
    if marker is not None:
        return marker, False
    layout.root.mkdir(parents=True, exist_ok=True)
    return write_marker(layout, kind, config_sha256), empty


def unclaim_output(layout: OutputLayout, created_root: bool) -> None:
    """Undo a claim that committed nothing: remove only what curate wrote (marker, journal, lock,
    manifest, empty folders), so a run that failed at once (a typo in a source) leaves no output
    that a corrected config would then be refused. A commit that a worker made without the driver
    hearing of it keeps the claim: the output is then a resumable one."""
    if layout.part_files():
        return
    for path in (layout.manifest, layout.journal, layout.lock, layout.marker):
        path.unlink(missing_ok=True)
    for folder in (layout.opened_dir, layout.meta_dir, layout.shards_dir, layout.questions_dir, layout.parts_dir):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty or absent: keep
    if created_root:
        try:
            layout.root.rmdir()
        except OSError:
            pass


def _conflict(root: OutputPath, theirs: str, ours: str) -> OutputConflict:
    return OutputConflict(
        f"{root}: holds a run of config {theirs[:12]}; this config is {ours[:12]}. "
        "Use another --output, or delete the directory to start over.")
