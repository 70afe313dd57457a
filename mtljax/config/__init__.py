"""Configs: the schema (`schema.py`, its checks in `checks.py`) and config
files and sweeps (`loading.py`).

    cfg = load_config("experiments/e1_mtl_vs_stl.py:quick", ["model.width=32"])
    points = load_sweep("experiments/e1_mtl_vs_stl.py:quick")
    cfg = validate(apply_overrides(cfg, {"model.width": 64}))
"""

from mtljax.config.checks import tfds_options
from mtljax.config.loading import Hyper
from mtljax.config.loading import apply_overrides
from mtljax.config.loading import load_config
from mtljax.config.loading import load_sweep
from mtljax.config.loading import parse_value
from mtljax.config.loading import point_name
from mtljax.config.loading import split_spec
from mtljax.config.schema import COSMETIC_FIELDS
from mtljax.config.schema import ConfigError
from mtljax.config.schema import MISSING_POLICIES
from mtljax.config.schema import OPEN_FIELDS
from mtljax.config.schema import RUN_MAPS
from mtljax.config.schema import _flatten  # noqa: F401 (the runs' fields)
from mtljax.config.schema import default_config
from mtljax.config.schema import describe_differences
from mtljax.config.schema import differences
from mtljax.config.schema import flatten_dict
from mtljax.config.schema import open_kwargs
from mtljax.config.schema import to_dict
from mtljax.config.schema import validate

__all__ = [
    "tfds_options",
    "COSMETIC_FIELDS", "ConfigError", "Hyper", "MISSING_POLICIES",
    "OPEN_FIELDS", "RUN_MAPS", "apply_overrides", "default_config",
    "describe_differences", "differences", "flatten_dict", "load_config",
    "load_sweep", "open_kwargs", "parse_value", "point_name", "split_spec",
    "to_dict", "validate",
]
