"""PyTorch eager vs ONNX Runtime latency of the detector and of the count pipeline per field.

    python -m bmc_detectron.analysis_tools.onnx_bench --config-file C --weights W \\
        [--onnx det.onnx] \\
        [--classifier-config C2 --classifier-weights W2 [--classifier-onnx cls.onnx]] \\
        [--images 'fields/*.png' | --num-images 4 --size 480 640] [--rounds 10 --warmup 2] \\
        [--threads 2] --output out/onnx_bench [KEY VALUE ...]

Models without ``--onnx`` / ``--classifier-onnx`` are exported into ``--output`` first. Batch 1,
both backends in this process with the same thread count, interleaved rounds
(:mod:`bmc_detectron.deploy.bench`). Writes ``onnx_bench.json`` and ``onnx_bench.md`` and prints
the table. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch

from bmc_detectron.config import ConfigError
from bmc_detectron.utils.io import expand_inputs


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="detector config (yaml)")
    p.add_argument("--weights", required=True, help="detector weights (.pth / .pkl)")
    p.add_argument("--onnx", help="the detector exported from them (default: export it)")
    p.add_argument("--classifier-config", help="cell classifier config (yaml)")
    p.add_argument("--classifier-weights", help="cell classifier weights")
    p.add_argument("--classifier-onnx", help="the classifier exported (default: export it)")
    p.add_argument("--images", nargs="+", help="fields: files, folders or glob patterns")
    p.add_argument("--num-images", type=int, default=4, help="synthetic fields without --images")
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), help="their height, width")
    p.add_argument("--rounds", type=int, default=10, help="measured rounds over the images")
    p.add_argument("--warmup", type=int, default=2, help="rounds run first, not measured")
    p.add_argument(
        "--threads", type=int, nargs="+", default=[2], help="threads of both backends (each)"
    )
    p.add_argument("--output", required=True, help="folder of the JSON and markdown results")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="detector config overrides KEY VALUE")
    return p


def _fields(args: argparse.Namespace) -> List[np.ndarray]:
    from bmc_detectron.deploy.bench import synthetic_fields

    if not args.images:
        return synthetic_fields(args.num_images, *args.size)
    images = [cv2.imread(str(p)) for p in expand_inputs(args.images)]
    if any(im is None for im in images) or not images:
        raise ValueError(f"unreadable or no images in {' '.join(args.images)}")
    return images


def _exported(config: str, weights: str, onnx: Optional[str], out: Path, opts: Sequence[str]):
    from bmc_detectron.deploy import export_onnx

    if onnx:
        return onnx
    path = out / f"{Path(config).stem}.onnx"
    export_onnx(config, weights, path, opts, verify=False)
    return str(path)


def _backends(args: argparse.Namespace, det_onnx: str, cls_onnx: Optional[str], threads: int):
    """The four subjects at ``threads``: both detectors and both count pipelines."""
    from bmc_detectron.deploy import OnnxDetector, build_onnx_counter
    from bmc_detectron.pipeline import CellClassifier, CellCounter, Detector

    torch.set_num_threads(threads)
    opts = [*args.opts, "MODEL.DEVICE", "cpu"]
    torch_det = Detector.from_config(args.config_file, args.weights, opts)
    classifier = None
    if args.classifier_config:
        classifier = CellClassifier.from_config(
            args.classifier_config, args.classifier_weights, ["MODEL.DEVICE", "cpu"]
        )
    counters = {
        "pytorch": CellCounter(torch_det, classifier),
        "onnxruntime": build_onnx_counter(det_onnx, cls_onnx, threads=threads),
    }
    return torch_det, OnnxDetector(det_onnx, threads=threads), counters


def run(args: argparse.Namespace) -> dict:
    """Export what is missing, measure at every thread count, write the results; returns them."""
    from bmc_detectron.deploy.bench import benchmark_result, run_benchmark, write_result

    if bool(args.classifier_config) != bool(args.classifier_weights):
        raise ValueError("a classifier needs both --classifier-config and --classifier-weights")
    out = Path(args.output)
    fields = _fields(args)
    det_onnx = _exported(args.config_file, args.weights, args.onnx, out, args.opts)
    cls_onnx = None
    if args.classifier_config:
        cls_onnx = _exported(
            args.classifier_config, args.classifier_weights, args.classifier_onnx, out, ()
        )
    runs = []
    for threads in args.threads:
        torch_det, onnx_det, counters = _backends(args, det_onnx, cls_onnx, threads)
        runs.append(
            run_benchmark(
                torch_det,
                onnx_det,
                fields,
                rounds=args.rounds,
                warmup=args.warmup,
                threads=threads,
                counters=counters,
            )
        )
    result = benchmark_result(runs, fields, args.rounds, args.warmup)
    result["detector_onnx"], result["classifier_onnx"] = det_onnx, cls_onnx
    result["command"] = ["python", "-m", "bmc_detectron.analysis_tools.onnx_bench", *args.argv]
    write_result(result, out)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = run(args)
    except (ConfigError, OSError, ValueError, ImportError) as e:
        print(
            f"error: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}", file=sys.stderr
        )
        return 2
    from bmc_detectron.deploy.bench import markdown

    print(markdown(result), end="")
    print(f"written: {Path(args.output) / 'onnx_bench.json'}, onnx_bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
