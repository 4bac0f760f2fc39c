"""What every exporter does first: read the source's manifest, and claim the destination for this
export (its kind and options), so a resumed export continues its own work and never another's."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath
from curate.io.ownership import OutputRefused, claim_output


@dataclass(frozen=True)
class ExportPlan:
    src: OutputLayout
    out: OutputLayout
    manifest: dict


def plan_export(source: str | OutputPath, dest: str | OutputPath, kind: str, options: Callable[[dict], str],
                finished: bool = True) -> ExportPlan:
    """Source and destination (local paths or object-storage URIs) of an export, the destination
    claimed for ``kind`` with ``options(manifest)``. ``finished``: refuse a source whose run has not
    completed."""
    src = OutputLayout.at(source)
    try:
        manifest = json.loads(src.manifest.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no manifest.json; is this a curate output?") from None
    if finished and (manifest.get("status") != "complete" or not src.index.exists()):
        raise OutputRefused(f"{source}: the run is {manifest.get('status')}; finish it (run the same command "
                            "again) before exporting")
    out = OutputLayout.at(dest)
    digest = hashlib.sha256(f"{kind}-v1:{manifest.get('config_sha256')}:{options(manifest)}".encode()).hexdigest()
    claim_output(out, kind, digest, [str(src.root)])
    return ExportPlan(src, out, manifest)
