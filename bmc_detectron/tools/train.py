"""Train or evaluate a detector or a cell classifier, detectron2 style.

    bmc train --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml [KEY VALUE ...]
    bmc train --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    bmc train --config-file CONFIG --num-gpus 8          # one machine, 8 GPUs (DDP)
    bmc train --config-file CONFIG --resume               # continue an interrupted run

(or ``python -m bmc_detectron.tools.train``, or ``python train_net.py``). The trainer follows the
config's META_ARCHITECTURE (:func:`bmc_detectron.engine.trainer_class`): ``BMCTrainer`` for the
detectors, ``BMCClassifierTrainer`` for the cell classifier. Exit status: 0 done, 1 a bad config
or dataset (one line naming it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from detectron2.engine import default_argument_parser, launch

from bmc_detectron.config import ConfigError
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.engine import main as train_or_evaluate


def build_parser() -> argparse.ArgumentParser:
    """detectron2's training arguments (--config-file, --resume, --eval-only, --num-gpus, ...)."""
    p = default_argument_parser()
    p.description = __doc__.split("\n")[0]
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        launch(
            train_or_evaluate,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
