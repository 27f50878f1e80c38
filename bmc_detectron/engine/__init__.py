"""Training and evaluation engine."""

from .classifier_trainer import BMCClassifierTrainer
from .trainer import BMCTrainer, load_checked_dicts, main, setup, trainer_class

__all__ = [
    "BMCClassifierTrainer",
    "BMCTrainer",
    "load_checked_dicts",
    "main",
    "setup",
    "trainer_class",
]
