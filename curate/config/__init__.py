"""Pipeline configuration: the models (``models.py``) and their loading from YAML (``loading.py``)."""

from curate.config.loading import ConfigError, apply_overrides, load_config, load_yaml_model, parse_override  # noqa: F401
from curate.config.models import *  # noqa: F401,F403
from curate.config.models import __all__ as _models

__all__ = ["ConfigError", "apply_overrides", "load_config", "load_yaml_model", "parse_override", *_models]
