"""Loading configs from YAML: ``--set`` overrides, backend switches, errors that name file and key."""

from __future__ import annotations

import difflib
import logging
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from curate.config.models import PipelineConfig, backend_names


class ConfigError(ValueError):
    """A pipeline file that cannot be used; the message names the file and the key."""


def _format_errors(source: str, err: ValidationError, overrides: list[str] | None = None,
                   model: type[BaseModel] | None = None) -> str:
    lines = [f"{source}: invalid pipeline config"]
    for e in err.errors():
        # Discriminated unions insert the tag into the location; keep only real keys.
        loc = ".".join(_real_keys(e["loc"]))
        if e["type"] == "extra_forbidden":
            meant = _nearest_key(model, e["loc"]) if model is not None else None
            line = f"  {loc}: unknown key" + (f" (did you mean {meant}?)" if meant else "")
        else:
            line = f"  {loc or '<root>'}: {e['msg']}"
        lines.append(line + _blame(loc, overrides))
    return "\n".join(lines)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's annotation may hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _backend_tags(model: type[BaseModel]) -> tuple:
    """The values of a union member's ``backend`` Literal (its tag in error locations)."""
    field = model.model_fields.get("backend")
    return typing.get_args(field.annotation) if field is not None else ()


def _nearest_key(model: type[BaseModel], loc: tuple) -> str | None:
    """The known key closest to the unknown one at ``loc`` (a typo's intended key), if one is close."""
    candidates = [model]
    for part in loc[:-1]:
        fields = [m.model_fields[part] for m in candidates if isinstance(part, str) and part in m.model_fields]
        if fields:
            candidates = [m for field in fields for m in _models_in(field.annotation)]
        elif isinstance(part, str):  # a discriminated union's tag: the members it names
            tagged = [m for m in candidates if part in _backend_tags(m)]
            candidates = tagged or candidates
    known = {name for m in candidates for name in m.model_fields}
    close = difflib.get_close_matches(str(loc[-1]), sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _blame(loc: str, overrides: list[str] | None) -> str:
    """`` (from --set KEY=VALUE)`` when a --set argument wrote the key in error (or a key above it)."""
    for text in overrides or []:
        key = text.split("=", 1)[0].strip()
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + ".") and loc:
            return f" (from --set {text})"
    return ""


_UNION_FIELDS = {"masks", "natural", "document"}


def _real_keys(loc: tuple) -> list[str]:
    """Drop the backend tag pydantic inserts after a discriminated-union field."""
    return [
        str(part)
        for i, part in enumerate(loc)
        if not (i > 0 and loc[i - 1] in _UNION_FIELDS and part in _TAGS)
    ]


_TAGS = backend_names()


def split_override(text: str) -> tuple[list[str], str]:
    """``a.b.c=value`` -> (['a','b','c'], 'value'): the key's parts and the value's text as typed."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. output.path=out/x")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    return parts, raw.strip()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a','b','c'], value parsed as a YAML scalar/flow value)."""
    parts, raw = split_override(text)
    return parts, yaml.safe_load(raw) if raw else ""


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in the raw config; a numeric part indexes a list (``sources.0.path``)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {text!r}: {'.'.join(parts[:depth])} has no item {part}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(parts[:depth])} is not a mapping")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
    return raw


def _bundled_pipelines_hint() -> str:
    """Where the pipelines that come with curate are, for a path given from another directory: they
    sit beside the package in a checkout (an installed wheel does not carry them)."""
    folder = Path(__file__).resolve().parents[2] / "pipelines"
    found = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not found:
        return "; curate's own pipelines are in its repository's pipelines/ folder"
    return "; curate's own pipelines are " + ", ".join(str(p) for p in found)


def _read_yaml(path: Path, overrides: list[str] | None, replace: dict | None = None) -> dict:
    """The file's mapping, its top-level keys in ``replace`` replaced (``-i`` replaces the sources), then
    the ``--set`` overrides applied."""
    try:
        text = path.read_text()
    except OSError as e:
        hint = _bundled_pipelines_hint() if isinstance(e, FileNotFoundError) else ""
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e}){hint}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping at the top level")
    return apply_overrides({**raw, **(replace or {})}, overrides or [])


def load_config(path: str | Path, overrides: list[str] | None = None,
                sources: list[dict] | None = None) -> PipelineConfig:
    """Read a pipeline YAML, apply ``--set`` overrides, validate. Raises ConfigError naming the file.
    ``sources`` (``-i``) replace the file's before the overrides, so ``--set sources.0.kind=...`` applies to them."""
    return load_yaml_model(PipelineConfig, "pipeline config", path, overrides,
                           replace={"sources": sources} if sources else None)


def _split_backend_switches(overrides: list[str] | None) -> tuple[dict[tuple[str, ...], str], list[str]]:
    """Sections whose backend a ``--set SECTION.backend=NAME`` chooses (section path -> NAME), and
    the other overrides."""
    switches, others = {}, []
    for text in overrides or []:
        parts, value = parse_override(text)
        if parts[-1] == "backend" and isinstance(value, str):
            switches[tuple(parts[:-1])] = value
        else:
            others.append(text)
    return switches, others


def _unknown_keys(model: type[BaseModel], raw: dict) -> set[str]:
    """Dotted names of the keys ``model`` does not take in ``raw``."""
    try:
        model.model_validate(raw)
    except ValidationError as e:
        return {".".join(map(str, _real_keys(x["loc"]))) for x in e.errors() if x["type"] == "extra_forbidden"}
    return set()


def _drop_keys_of_replaced_backends(raw: dict, before: dict, model: type[BaseModel],
                                    switches: dict[tuple[str, ...], str], err: ValidationError) -> list[str]:
    """Options of a backend that ``--set`` replaced (keys the new backend does not take that the
    old one did, i.e. valid in ``before``, the config without the switches): removed from ``raw``;
    returns their dotted names."""
    unknown_before = _unknown_keys(model, before)
    dropped = []
    for e in err.errors():
        loc = e["loc"]
        if e["type"] != "extra_forbidden" or len(loc) < 3:
            continue
        section, tag, key = tuple(str(part) for part in loc[:-2]), loc[-2], loc[-1]
        name = ".".join(section + (str(key),))
        if switches.get(section) != tag or name in unknown_before:
            continue
        node: Any = raw
        for part in section:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node.pop(key, None)
        dropped.append(name)
    return dropped


def _config_error(path: str | Path, what: str, err: ValidationError,
                  overrides: list[str] | None = None, model: type[BaseModel] | None = None) -> ConfigError:
    return ConfigError(_format_errors(str(path), err, overrides, model).replace("pipeline config", what))


def _override_texts(overrides: list[str] | None) -> dict[tuple[str, ...], str]:
    """Each ``--set`` key (as a location) and its value's text as typed."""
    return {tuple(parts): raw for parts, raw in map(split_override, overrides or [])}


def _validate(model: type[BaseModel], raw: dict, overrides: list[str] | None):
    """``model`` from ``raw``. A ``--set`` value is read as YAML (``6`` a number, ``[1,2]`` a list), but
    where its key takes a string and YAML made something else of it (``2024-01-01`` a date, ``123`` a
    number), the key gets the text as typed."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        texts, retyped = _override_texts(overrides), False
        for error in e.errors():
            loc = tuple(_real_keys(error["loc"]))
            if error["type"] == "string_type" and loc in texts:
                node: Any = raw
                for part in loc[:-1]:
                    node = node[int(part)] if isinstance(node, list) else node[part]
                node[int(loc[-1]) if isinstance(node, list) else loc[-1]] = texts[loc]
                retyped = True
        if not retyped:
            raise
    return model.model_validate(raw)


def load_yaml_model(model: type[BaseModel], what: str, path: str | Path, overrides: list[str] | None = None,
                    replace: dict | None = None):
    """Read a YAML file, apply ``--set`` overrides and validate it as ``model``; errors name the file.

    ``--set SECTION.backend=NAME`` replaces a section's backend: the old backend's options that
    NAME does not take are dropped, with a warning naming them (any other unknown key is an error)."""
    raw = _read_yaml(Path(path), overrides, replace)
    try:
        return _validate(model, raw, overrides)
    except ValidationError as e:
        switches, others = _split_backend_switches(overrides)
        dropped = _drop_keys_of_replaced_backends(raw, _read_yaml(Path(path), others, replace), model, switches, e) \
            if switches else []
        if not dropped:
            raise _config_error(path, what, e, overrides, model) from e
    logging.getLogger(__name__).warning("%s: --set chose another backend; dropped the old backend's options: %s",
                                        path, ", ".join(dropped))
    try:
        return _validate(model, raw, overrides)
    except ValidationError as e:
        raise _config_error(path, what, e, overrides, model) from e
