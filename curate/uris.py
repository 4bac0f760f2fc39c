"""What a path names: a URI is a string that starts with ``SCHEME://``; anything else is a local path,
whatever characters it holds (``run-12:00`` is a folder, not a URI). Pure string rules, shared by
the config (which refuses an input or output on storage curate cannot reach) and curate.io.fs."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")

# pyarrow.fs's filesystems (FileSystem.from_uri), mock:// aside
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
_DOWNLOADS = ("http", "https")


def scheme_of(uri: str) -> str | None:
    """``s3`` for ``s3://bucket/key``; None for a local path."""
    m = _SCHEME.match(uri)
    return m.group("scheme").lower() if m else None


def storage_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be read or written as storage (its scheme), or None: a local path or a URI of
    a filesystem pyarrow has."""
    scheme = scheme_of(uri)
    if scheme is None or scheme in STORAGE_SCHEMES:
        return None
    said = f"{uri}: {scheme}:// is not storage curate reads or writes (local paths, s3://, gs://, abfs://, hdfs://)"
    if scheme in _DOWNLOADS:
        said += ("; it downloads no URL: fetch them first (img2dataset writes WebDataset tars, which "
                 "`-i 'DIR/*.tar'` reads)")
    return said
