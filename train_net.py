#!/usr/bin/env python
"""Train or evaluate a bmc-detectron model, detectron2 style.

python train_net.py --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml
python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
python train_net.py --config-file CONFIG --num-gpus 8          # one machine, 8 GPUs (DDP)
python train_net.py --config-file CONFIG --resume               # continue an interrupted run
"""

import sys

from detectron2.engine import default_argument_parser, launch

from bmc_detectron.config import ConfigError
from bmc_detectron.data.checks import DatasetError
from bmc_detectron.engine import main


def run() -> None:
    args = default_argument_parser().parse_args()
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (ConfigError, DatasetError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    run()
