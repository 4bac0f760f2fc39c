"""Model backends, built from their config section.

A config section's class names its implementation (``IMPLEMENTATIONS``: backend name ->
``module:Class``), so backend names live only in curate/config.py. Modules are imported when the
backend is built, so a missing optional package fails with a message naming what to install.
"""

from __future__ import annotations

import importlib
from typing import Any


class BackendUnavailable(RuntimeError):
    """The config names a backend that cannot run in this installation."""


def implementation(cfg: Any) -> str | None:
    """``module:Class`` of the backend that ``cfg`` (a config section) selects; None when it has no
    object to build (``none``, or ``vllm`` which runs as ray.data.llm stages)."""
    return type(cfg).IMPLEMENTATIONS.get(cfg.backend)


def _load(cfg: Any):
    module_name, class_name = implementation(cfg).split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"backend {cfg.backend!r} needs a package that is missing: {e}") from e
    return getattr(module, class_name)


def check_available(cfg: Any) -> None:
    """Import the backend's module now (before Ray starts), so a missing package is a clear error."""
    if implementation(cfg) is not None:
        _load(cfg)


def build(cfg: Any) -> Any:
    if implementation(cfg) is None:
        raise BackendUnavailable(f"backend {cfg.backend!r} has nothing to build in an actor")
    return _load(cfg)(cfg)
