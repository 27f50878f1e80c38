"""Training and evaluation engine."""

from bmc_detectron.engine.classifier_trainer import BMCClassifierTrainer
from bmc_detectron.engine.launch import main, setup, trainer_class
from bmc_detectron.engine.trainer import BMCTrainer, load_checked_dicts

__all__ = [
    "BMCClassifierTrainer",
    "BMCTrainer",
    "load_checked_dicts",
    "main",
    "setup",
    "trainer_class",
]
