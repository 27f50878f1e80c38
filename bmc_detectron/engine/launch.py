"""The command-line entry: config set-up, the trainer of the config's META_ARCH, train or evaluate.

``train_net.py`` calls :func:`main` through detectron2's ``launch``.
"""

from __future__ import annotations

import argparse

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from bmc_detectron.config import CLASSIFIER_ARCH, build_cfg
from bmc_detectron.engine.classifier_trainer import BMCClassifierTrainer
from bmc_detectron.engine.trainer import BMCTrainer


def setup(args: argparse.Namespace) -> CfgNode:
    """Config plus detectron2's logging / seeding / output-dir set-up for a command-line run."""
    cfg = build_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    # this package's messages (data checks, classification tables) in the console and log.txt;
    # still propagated, so that handlers on the root logger (pytest's caplog) see them too
    setup_logger(
        cfg.OUTPUT_DIR,
        distributed_rank=comm.get_rank(),
        name="bmc_detectron",
        enable_propagation=True,
    )
    return cfg


def trainer_class(cfg: CfgNode) -> type:
    """The trainer of ``cfg.MODEL.META_ARCHITECTURE``: the cell classifier's, else BMCTrainer."""
    if cfg.MODEL.META_ARCHITECTURE == CLASSIFIER_ARCH:
        return BMCClassifierTrainer
    return BMCTrainer


def main(args: argparse.Namespace):
    """Train (optionally resuming) or, with ``--eval-only``, evaluate; returns the metrics."""
    cfg = setup(args)
    trainer_cls = trainer_class(cfg)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
