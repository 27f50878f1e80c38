"""Training and evaluation engine."""

from .trainer import BMCTrainer, load_checked_dicts, main, setup

__all__ = ["BMCTrainer", "load_checked_dicts", "main", "setup"]
