"""Training and evaluation engine."""

from .trainer import BMCTrainer, ConfigError, build_cfg, load_checked_dicts, main, setup

__all__ = ["BMCTrainer", "ConfigError", "build_cfg", "load_checked_dicts", "main", "setup"]
