"""PyTorch eager vs ONNX Runtime latency, side by side in one process, interleaved rounds.

Both backends get the same images, batch 1, the same number of threads; in every round each
image goes through every backend, the order of the backends alternating between rounds, so that
the load of a shared machine falls on both alike and their ratio stays meaningful. Measured: the
detector call (resize, network, post-processing) and, optionally, the count pipeline per field
(:class:`~bmc_detectron.pipeline.CellCounter`: detection, crops, recognition).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from bmc_detectron.reporting.provenance import machine_info
from bmc_detectron.reporting.timing import interleaved_latency, summarize_ms
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

#: The target of issue 10: ONNX Runtime's median at most this fraction of PyTorch's.
TARGET_RATIO = 0.7


def synthetic_fields(count: int, height: int, width: int, seed: int = 0) -> List[np.ndarray]:
    """``count`` synthetic smears (BGR uint8) of ``height`` x ``width``."""
    from bmc_detectron.data.synthetic import default_scale, generate_image

    rng = np.random.default_rng(seed)
    scale = default_scale(height, width)
    return [
        np.ascontiguousarray(generate_image(rng, height, width, scale=scale)[0][:, :, ::-1])
        for _ in range(count)
    ]


def compare_stage(
    stage: str,
    subjects: Mapping[str, Callable[[np.ndarray], Any]],
    images: Sequence[np.ndarray],
    rounds: int,
    warmup: int,
) -> Dict[str, Any]:
    """Latency of ``subjects`` (``{"pytorch": ..., "onnxruntime": ...}``) and their ratio
    (:func:`~bmc_detectron.reporting.timing.interleaved_latency`: every image through both
    backends in turn, the order alternating between rounds; ``warmup`` rounds not recorded)."""
    times = interleaved_latency(subjects, images, rounds, warmup)
    backends = {name: summarize_ms(t) for name, t in times.items()}
    ratio = backends["onnxruntime"]["median_ms"] / backends["pytorch"]["median_ms"]
    # the ratio within each round and image, the load of the moment cancelling out
    paired = [o / p for o, p in zip(times["onnxruntime"], times["pytorch"])]
    return {
        "stage": stage,
        "backends": backends,
        "ratio_median": ratio,
        "ratio_paired_median": float(statistics.median(paired)),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
    }


def machine() -> Dict[str, Any]:
    """What the numbers were measured on: :func:`~bmc_detectron.reporting.provenance.machine_info`
    with the ONNX Runtime version and the 1, 5 and 15 minute load averages."""
    import onnxruntime

    info: Dict[str, Any] = dict(machine_info())
    info["onnxruntime"] = onnxruntime.__version__
    info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def markdown(result: Mapping[str, Any]) -> str:
    """The latency table of a benchmark result (:func:`benchmark_result`)."""
    lines = [
        f"Batch 1, {result['images']} images of {result['image_size']}, {result['rounds']} "
        f"interleaved rounds (+{result['warmup']} warm-up); load average at the start "
        f"{result['machine']['load_average']}.",
        "",
        "| stage | threads | PyTorch median (ms) | PyTorch p90 | ONNX Runtime median (ms) "
        "| ORT p90 | ratio (medians) | ratio (paired) | target <= 0.7 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for run in result["runs"]:
        for row in run["stages"]:
            pt, ort = row["backends"]["pytorch"], row["backends"]["onnxruntime"]
            lines.append(
                f"| {row['stage']} | {run['threads']} | {pt['median_ms']:.1f} | "
                f"{pt['p90_ms']:.1f} | {ort['median_ms']:.1f} | {ort['p90_ms']:.1f} | "
                f"{row['ratio_median']:.2f} | {row['ratio_paired_median']:.2f} | "
                f"{'met' if row['target_met'] else 'not met'} |"
            )
            for key in ("detections_per_image", "cells_per_field"):
                if key in row and run is result["runs"][0]:
                    counts = ", ".join(f"{name} {values}" for name, values in row[key].items())
                    notes.append(f"- {row['stage']}: {key.replace('_', ' ')}: {counts}")
    return "\n".join([*lines, "", *notes]) + "\n"


def write_result(result: Mapping[str, Any], output: Path) -> Dict[str, Path]:
    """``onnx_bench.json`` and ``onnx_bench.md`` in ``output`` (atomically)."""
    output = Path(output)
    return {
        "json": write_json_atomic(result, output / "onnx_bench.json", indent=2),
        "markdown": atomic_write_text(output / "onnx_bench.md", markdown(result)),
    }


def run_benchmark(
    torch_detector: Callable[[np.ndarray], Any],
    onnx_detector: Callable[[np.ndarray], Any],
    images: Sequence[np.ndarray],
    *,
    rounds: int,
    warmup: int,
    threads: int,
    counters: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Detector (and, with ``counters`` ``{"pytorch": c1, "onnxruntime": c2}``, count pipeline)
    latency of both backends on ``images``, ``threads`` being what both were built with."""
    detectors = {"pytorch": torch_detector, "onnxruntime": onnx_detector}
    stages = [compare_stage("detector", detectors, images, rounds, warmup)]
    stages[0]["detections_per_image"] = {
        name: [len(fn(im)) for im in images] for name, fn in detectors.items()
    }
    if counters:
        subjects = {name: counter.count_field for name, counter in counters.items()}
        stage = compare_stage("count pipeline / field", subjects, images, rounds, warmup)
        stage["cells_per_field"] = {
            name: [len(counter.count_image(im)) for im in images]
            for name, counter in counters.items()
        }
        stages.append(stage)
    return {"threads": threads, "stages": stages}


def benchmark_result(
    runs: Sequence[Mapping[str, Any]], images: Sequence[np.ndarray], rounds: int, warmup: int
) -> Dict[str, Any]:
    """The runs of :func:`run_benchmark` (one per thread count) with what they measured on."""
    sizes = sorted({f"{im.shape[0]}x{im.shape[1]}" for im in images})
    return {
        "images": len(images),
        "image_size": ", ".join(sizes),
        "rounds": rounds,
        "warmup": warmup,
        "machine": machine(),
        "runs": list(runs),
    }
