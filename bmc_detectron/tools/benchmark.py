"""Cost (and, with weights, accuracy) of one detector config on this machine.

    python -m bmc_detectron.tools.benchmark \
        --config-file configs/cpu/retinanet_R_18_PAN_SE_cpu.yaml \
        [--weights model_final.pth --dataset bccd_test] [--input-size 320 426] [--num-images 20] \
        [--batch-size 4] [--iters 5] [--output output/benchmark] [KEY VALUE ...]

detectron2's stock RetinaNet (the reference) is measured with the overrides
``MODEL.META_ARCHITECTURE RetinaNet MODEL.BACKBONE.NAME build_retinanet_resnet_fpn_backbone``.

What is measured (all on ``MODEL.DEVICE``; CUDA is synchronized before every clock read and runs
under fp16 autocast when ``SOLVER.AMP.ENABLED``):

- parameters: every parameter of the model, in millions (trainable ones separately);
- GFLOPs: fvcore ``FlopCountAnalysis`` of backbone (ResNet + FPN/PAN neck) + head (cls and box
  towers) in eval mode on one normalized, padded image of ``--input-size``. Pre-processing,
  anchor generation, box decoding and NMS are not counted. fvcore counts one multiply-add as one
  flop (so the number is GMACs, the convention of detectron2 and detection papers); deformable
  convolutions are counted like a dense conv of the same shape (sampling cost excluded);
- latency: batch 1, after ``--warmup`` runs, median and p90 over ``--num-images`` images resized
  to ``--input-size`` (the images of ``--images``/``--dataset``, else random), including
  pre- and post-processing (``model([input])`` in eval mode);
- throughput: images/s of batched inference (batch ``--batch-size``) through a detectron2 test
  data loader over the same images (decoding and resizing included; one warm-up batch first);
- training iteration: median over ``--iters`` forward + backward + SGD steps (after one warm-up)
  on ``SOLVER.IMS_PER_BATCH`` random images of ``--input-size`` with ``--train-gts`` random boxes;
- peak memory per phase: process RSS sampled by psutil on CPU (``peak_mb``; ``delta_mb`` is the
  increase over the RSS at the start of the phase), ``torch.cuda.max_memory_allocated`` on CUDA;
- COCO metrics (``BMCTrainer.test``) when ``--weights`` and ``--dataset`` are both given.

Writes ``OUTPUT/benchmark_<name>.json`` and appends one row to ``OUTPUT/benchmark.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from bmc_detectron.config import ConfigError, build_cfg
from bmc_detectron.data.datasets import prepare_dataset
from bmc_detectron.engine import BMCTrainer
from bmc_detectron.tools._bench_utils import (
    PeakMemory,
    append_markdown_row,
    autocast,
    fmt,
    machine_info,
    random_batch,
    summarize_ms,
    timed,
    torch_threads,
    write_json,
)

logger = logging.getLogger("bmc_detectron.benchmark")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TABLE_HEADERS = (
    "run", "device", "input", "params (M)", "GFLOPs", "latency med / p90 (ms)",
    "throughput (img/s @B)", "train iter (ms @batch)", "peak mem infer / train (MB)",
    "AP", "AP50", "AP75", "date",
)  # fmt: skip


def count_parameters(model: nn.Module) -> Dict[str, float]:
    """All and trainable parameters, in millions."""
    params = list(model.parameters())
    return {
        "params_m": sum(p.numel() for p in params) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params if p.requires_grad) / 1e6,
    }


class _BackboneHead(nn.Module):
    """Backbone + head of a dense detector, the part whose FLOPs are reported."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.in_features = list(model.head_in_features)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        outputs = self.head([feats[f] for f in self.in_features])
        return tuple(t for group in outputs for t in group)


def _deform_conv_flops(inputs, outputs) -> int:
    """torchvision::deform_conv2d counted as the dense conv of the same shape (MACs)."""
    weight = get_shape(inputs[1])  # (C_out, C_in / groups, kh, kw)
    return int(np.prod(get_shape(outputs[0]))) * int(np.prod(weight[1:]))


def count_gflops(model: nn.Module, input_size: Tuple[int, int]) -> Dict[str, object]:
    """fvcore GFLOPs (multiply-adds) of backbone + head on one image of ``input_size`` (H, W)."""
    was_training = model.training
    model.eval()
    h, w = input_size
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    try:
        with torch.no_grad():
            x = model.preprocess_image([{"image": image}]).tensor
            fca = FlopCountAnalysis(_BackboneHead(model), (x,))
            fca.set_op_handle("torchvision::deform_conv2d", _deform_conv_flops)
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = fca.total()
            by_module = fca.by_module()
            unsupported = dict(fca.unsupported_ops())
    finally:
        model.train(was_training)
    return {
        "gflops": total / 1e9,
        "backbone_gflops": by_module.get("backbone", 0) / 1e9,
        "head_gflops": by_module.get("head", 0) / 1e9,
        "padded_input": [int(x.shape[-2]), int(x.shape[-1])],
        "uncounted_ops": unsupported,
        "counted": "backbone+head, 1 multiply-add = 1 flop",
    }


def image_records(images: str | None, dataset: str | None) -> List[dict]:
    """detectron2 records (file_name, image_id, height, width) of a folder or a dataset."""
    if images:
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{images}: no images")
        out = []
        for i, p in enumerate(files):
            h, w = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2]
            out.append({"file_name": str(p), "image_id": i, "height": h, "width": w})
        return out
    if dataset:
        prepare_dataset(dataset)
        return [
            {k: r[k] for k in ("file_name", "image_id", "height", "width")}
            for r in DatasetCatalog.get(dataset)
        ]
    return []


def random_image_folder(folder: Path, num: int, input_size: Tuple[int, int]) -> List[dict]:
    """Write ``num`` random-noise PNGs of ``input_size`` to ``folder``; their records."""
    rng = np.random.default_rng(0)
    h, w = input_size
    for i in range(num):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return image_records(str(folder), None)


def latency_inputs(
    records: Sequence[dict], num: int, input_size: Tuple[int, int], image_format: str
) -> List[dict]:
    """``num`` model inputs of exactly ``input_size`` from ``records`` (cycled), else random."""
    h, w = input_size
    out = []
    g = torch.Generator().manual_seed(0)
    for i in range(num):
        if records:
            img = read_image(records[i % len(records)]["file_name"], format=image_format)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            tensor = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)))
        else:
            tensor = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
        out.append({"image": tensor, "height": h, "width": w})
    return out


def measure_latency(
    model: nn.Module, inputs: Sequence[dict], warmup: int = 3, amp: bool = False
) -> Dict[str, object]:
    """Batch-1 eval-mode latency (median, p90 in ms) and peak memory over ``inputs``."""
    device = model.device
    model.eval()
    times = []
    with torch.no_grad(), autocast(device, amp), PeakMemory(device) as mem:
        for i in range(warmup):
            model([inputs[i % len(inputs)]])
        for inp in inputs:
            times.append(timed(lambda inp=inp: model([inp]), device)[0])
    return {**summarize_ms(times), "warmup": warmup, "memory": mem.as_dict()}


def measure_throughput(
    model: nn.Module,
    cfg: CfgNode,
    records: Sequence[dict],
    input_size: Tuple[int, int],
    batch_size: int,
    amp: bool = False,
) -> Dict[str, object]:
    """Images/s of batched inference over ``records`` through a detectron2 test loader."""
    device = model.device
    mapper = DatasetMapper(cfg, False, augmentations=[T.Resize(tuple(input_size))])
    loader = build_detection_test_loader(
        list(records), mapper=mapper, batch_size=batch_size,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )  # fmt: skip
    warm = latency_inputs([], batch_size, input_size, cfg.INPUT.FORMAT)
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        model(warm)

        def run() -> int:
            count = 0
            for batch in loader:
                model(batch)
                count += len(batch)
            return count

        seconds, count = timed(run, device)
    return {"images_per_s": count / seconds, "images": count, "batch_size": batch_size,
            "seconds": seconds}  # fmt: skip


def measure_training(
    cfg: CfgNode, input_size: Tuple[int, int], iters: int, num_gts: int = 20
) -> Dict[str, object]:
    """Median training iteration (forward + backward + SGD step) on a random batch."""
    model = build_model(cfg)
    model.train()
    device = model.device
    amp = bool(cfg.SOLVER.AMP.ENABLED) and device.type == "cuda"
    optimizer = BMCTrainer.build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    batch = random_batch(
        cfg.SOLVER.IMS_PER_BATCH, *input_size, num_gts, cfg.MODEL.RETINANET.NUM_CLASSES, cfg.SEED
    )

    def step() -> None:
        with autocast(device, amp):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    times = []
    with EventStorage(0) as storage, PeakMemory(device) as mem:
        for i in range(iters + 1):  # the first iteration is a warm-up
            storage.iter = i
            seconds = timed(step, device)[0]
            if i > 0:
                times.append(seconds)
    return {**summarize_ms(times), "batch_size": cfg.SOLVER.IMS_PER_BATCH, "gts_per_image": num_gts,
            "memory": mem.as_dict()}  # fmt: skip


def evaluate_coco(cfg: CfgNode, model: nn.Module, dataset: str, out_dir: Path) -> Dict[str, float]:
    """COCO metrics of ``model`` on ``dataset`` via ``BMCTrainer.test`` (writes the metrics)."""
    prepare_dataset(dataset)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (dataset,)
    cfg.OUTPUT_DIR = str(out_dir)
    cfg.freeze()
    results = BMCTrainer.test(cfg, model)
    return dict(results.get("bbox", results))


def default_input_size(cfg: CfgNode) -> Tuple[int, int]:
    """(MIN_SIZE_TEST, MAX_SIZE_TEST): the test size of a landscape image."""
    return int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)


def run_name(cfg: CfgNode, config_file: str) -> str:
    """Config file stem, with the meta-architecture appended when it is not BMCRetinaNet."""
    name = Path(config_file).stem
    arch = cfg.MODEL.META_ARCHITECTURE
    return name if arch == "BMCRetinaNet" else f"{name}-{arch}"


def run_benchmark(cfg: CfgNode, args: argparse.Namespace) -> Dict[str, object]:
    """Every measurement of the module docstring for one config; returns the JSON record."""
    input_size = tuple(args.input_size) if args.input_size else default_input_size(cfg)
    out_dir = Path(args.output)
    name = args.name or run_name(cfg, args.config_file)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        from detectron2.checkpoint import DetectionCheckpointer

        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    device = model.device
    amp = bool(cfg.SOLVER.AMP.ENABLED) and device.type == "cuda"
    rec: Dict[str, object] = {
        "name": name, "config_file": args.config_file, "overrides": list(args.opts),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME,
        "weights": cfg.MODEL.WEIGHTS or None, "device": str(device), "amp": amp,
        "input_size": list(input_size), "machine": machine_info(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m bmc_detectron.tools.benchmark " + shlex.join(args.argv),
    }  # fmt: skip
    rec.update(count_parameters(model))
    rec["flops"] = count_gflops(model, input_size)
    with tempfile.TemporaryDirectory() as tmp:
        records = image_records(args.images, args.dataset)[: max(args.num_images, 1)]
        source = args.images or args.dataset or "random"
        if not records:
            records = random_image_folder(Path(tmp), max(args.num_images, 1), input_size)
        inputs = latency_inputs(records, args.num_images, input_size, cfg.INPUT.FORMAT)
        rec["latency"] = {**measure_latency(model, inputs, args.warmup, amp), "source": source}
        if args.batch_size > 0:
            rec["throughput"] = measure_throughput(
                model, cfg, records, input_size, args.batch_size, amp
            )
    if args.iters > 0:
        rec["train"] = measure_training(cfg, input_size, args.iters, args.train_gts)
    rec["coco"] = None
    if cfg.MODEL.WEIGHTS and args.dataset:
        rec["coco"] = evaluate_coco(cfg, model, args.dataset, out_dir / name)
    return rec


def table_row(rec: Dict[str, object]) -> str:
    """One markdown row (see :data:`TABLE_HEADERS`) of a benchmark record."""
    lat, thr = rec["latency"], rec.get("throughput")
    train, coco = rec.get("train"), rec.get("coco") or {}
    mem_train = train["memory"]["peak_mb"] if train else None
    cells = [
        rec["name"], rec["device"], "x".join(str(s) for s in rec["input_size"]),
        fmt(rec["params_m"], 2), fmt(rec["flops"]["gflops"], 2),
        f"{fmt(lat['median_ms'])} / {fmt(lat['p90_ms'])}",
        f"{fmt(thr['images_per_s'], 2)} @{thr['batch_size']}" if thr else "-",
        f"{fmt(train['median_ms'], 0)} @{train['batch_size']}" if train else "-",
        f"{fmt(lat['memory']['peak_mb'], 0)} / {fmt(mem_train, 0)}",
        fmt(coco.get("AP")), fmt(coco.get("AP50")), fmt(coco.get("AP75")), rec["date"][:10],
    ]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", help="checkpoint (sets MODEL.WEIGHTS); enables COCO metrics")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="default: INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST")  # fmt: skip
    p.add_argument("--num-images", type=int, default=20, help="latency/throughput images")
    p.add_argument("--batch-size", type=int, default=4, help="throughput batch (0: skip)")
    p.add_argument("--dataset", help="registered dataset: images for timing, COCO metrics")
    p.add_argument("--images", help="image folder for latency/throughput (overrides --dataset)")
    p.add_argument("--iters", type=int, default=5, help="timed training iterations (0: skip)")
    p.add_argument("--train-gts", type=int, default=20, help="random gt boxes per train image")
    p.add_argument("--warmup", type=int, default=3, help="untimed batch-1 runs first")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--name", help="run name (default: config stem [+ meta-arch])")
    p.add_argument("--output", default="output/benchmark")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.num_images < 1:
        p.error("--num-images must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    setup_logger(name="bmc_detectron")
    opts = list(args.opts) + (["MODEL.WEIGHTS", args.weights] if args.weights else [])
    try:
        cfg = build_cfg(args.config_file, opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with torch_threads(args.threads):
        rec = run_benchmark(cfg, args)
    out = Path(args.output)
    write_json(out / f"benchmark_{rec['name']}.json", rec)
    row = table_row(rec)
    append_markdown_row(out / "benchmark.md", TABLE_HEADERS, row)
    print(row)
    print(f"[benchmark] {out / ('benchmark_' + rec['name'] + '.json')}, {out / 'benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
