"""Training and evaluation engine."""

from .classifier_trainer import BMCClassifierTrainer
from .launch import main, setup, trainer_class
from .trainer import BMCTrainer, load_checked_dicts

__all__ = [
    "BMCClassifierTrainer",
    "BMCTrainer",
    "load_checked_dicts",
    "main",
    "setup",
    "trainer_class",
]
