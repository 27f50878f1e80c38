#!/usr/bin/env python
"""Train or evaluate a bmc-detectron model, detectron2 style (the same as ``bmc train``).

python train_net.py --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml
python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
python train_net.py --config-file CONFIG --num-gpus 8          # one machine, 8 GPUs (DDP)
python train_net.py --config-file CONFIG --resume               # continue an interrupted run
"""

import sys

from bmc_detectron.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
