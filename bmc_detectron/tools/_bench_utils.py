"""Shared helpers of the benchmark tools: timing, memory, random batches, tables, machine info."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import psutil
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

logger = logging.getLogger("bmc_detectron.tools")


def registered_assigners() -> List[str]:
    """Names of the registered assigners (importing ``bmc_detectron`` registers all of them)."""
    from bmc_detectron.modeling.assigners import ASSIGNER_REGISTRY

    return sorted(name for name, _ in ASSIGNER_REGISTRY)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Dict[str, object]:
    """CPU model, cores, memory, torch / detectron2 versions and the GPU (if any)."""
    import detectron2

    info: Dict[str, object] = {
        "cpu": cpu_model(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": getattr(detectron2, "__version__", "unknown"),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    return info


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work (no-op on CPU) so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str) -> Tuple[float, object]:
    """Seconds taken by ``fn()`` (synchronized before and after) and its result."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def summarize_ms(seconds: Sequence[float]) -> Dict[str, float]:
    """Median, 90th percentile, mean and min in milliseconds of a list of durations."""
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        return {"median_ms": float("nan"), "p90_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    p90 = ms[max(0, math.ceil(0.9 * len(ms)) - 1)]  # nearest-rank 90th percentile
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": p90,
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "n": len(ms),
    }


def process_max_rss_mb() -> float:
    """High-water resident set size of this process since it started (``ru_maxrss``), MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class PeakMemory:
    """Peak memory while the ``with`` block runs.

    CPU: a thread samples the process RSS (psutil) every ``interval`` seconds (a few microseconds
    of GIL time per sample, negligible next to the timings); ``peak_mb`` is the
    largest sample and ``delta_mb`` its excess over the RSS at entry (allocator caches make the
    delta a lower bound of what the block allocated). CUDA: ``torch.cuda.max_memory_allocated``
    after resetting the peak statistics at entry (``delta_mb`` = peak - allocated at entry).
    """

    def __init__(self, device: torch.device | str, interval: float = 0.01):
        self.device = torch.device(device)
        self.interval = interval
        self.start_mb = self.peak_mb = self.delta_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()

    def _rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())
        self.delta_mb = max(0.0, self.peak_mb - self.start_mb)

    def as_dict(self) -> Dict[str, float]:
        kind = "cuda_max_allocated" if self.device.type == "cuda" else "rss"
        return {"method": kind, "peak_mb": self.peak_mb, "delta_mb": self.delta_mb}


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``enabled`` (SOLVER.AMP.ENABLED); a no-op context otherwise."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def random_gt_boxes(
    num: int, height: int, width: int, generator: torch.Generator, sizes: Tuple[float, float]
) -> torch.Tensor:
    """(num, 4) XYXY boxes with sides uniform in ``sizes`` (clipped), inside the image."""
    lo, hi = sizes
    wh = lo + (hi - lo) * torch.rand(num, 2, generator=generator)
    wh = torch.minimum(wh, torch.tensor([width - 1.0, height - 1.0]))
    xy = torch.rand(num, 2, generator=generator) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


def random_batch(
    num_images: int,
    height: int,
    width: int,
    num_gts: int,
    num_classes: int,
    seed: int = 0,
    box_sizes: Tuple[float, float] = (12.0, 96.0),
) -> List[Dict[str, object]]:
    """Random uint8 images of ``height x width`` with ``num_gts`` random gt boxes each."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(num_images):
        image = (torch.rand(3, height, width, generator=g) * 255).to(torch.uint8)
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(random_gt_boxes(num_gts, height, width, g, box_sizes))
        inst.gt_classes = torch.randint(0, num_classes, (num_gts,), generator=g)
        batch.append({"image": image, "instances": inst, "height": height, "width": width})
    return batch


def dataset_registration(name: str) -> Dict[str, object]:
    """What :func:`register_datasets` needs to register ``name`` in another process."""
    meta = MetadataCatalog.get(name).as_dict()
    skip = {"name", "json_file", "image_root", "evaluator_type"}
    extra = {}
    for k, v in meta.items():
        if k in skip or k == "thing_dataset_id_to_contiguous_id":
            continue
        try:
            extra[k] = json.loads(json.dumps(v))
        except TypeError:
            continue
    return {"json_file": meta["json_file"], "image_root": meta["image_root"], "metadata": extra}


def register_datasets(datasets: Dict[str, dict]) -> None:
    """Register (or re-point) datasets described by :func:`dataset_registration`."""
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset

    for name, d in datasets.items():
        if name in DatasetCatalog.list():
            meta = MetadataCatalog.get(name)
            same = meta.get("json_file") == d["json_file"]
            if same and meta.get("image_root") == d["image_root"]:
                continue
            unregister_dataset(name)
        register_coco_dataset(name, d["json_file"], d["image_root"], d["metadata"])


def nanmean(values: Sequence[float | None]) -> float:
    """Mean of the values that are neither None nor NaN (NaN if none)."""
    vals = [v for v in values if v is not None and v == v]
    return statistics.fmean(vals) if vals else float("nan")


def nanstd(values: Sequence[float | None]) -> float:
    """Sample standard deviation of the non-None, non-NaN values (NaN if fewer than two)."""
    vals = [v for v in values if v is not None and v == v]
    return statistics.stdev(vals) if len(vals) > 1 else float("nan")


def shell_join(args: Sequence[object]) -> str:
    """A copy-pastable command line; values with single quotes (e.g. ``('bccd_test',)``) are
    double-quoted instead of shlex's escaped form."""
    out = []
    for a in map(str, args):
        quoted = shlex.quote(a)
        if quoted != a and "'" in a and not any(c in a for c in '"$`\\!'):
            quoted = f'"{a}"'
        out.append(quoted)
    return " ".join(out)


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (cells already formatted or passed through :func:`fmt`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |")
    return "\n".join(lines)


def append_markdown_row(path: Path, headers: Sequence[str], row: str) -> None:
    """Append ``row`` to the markdown table in ``path``, writing the header for a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a") as f:
        if new:
            f.write(markdown_table(headers, []) + "\n")
        f.write(row + "\n")


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON atomically (NaN written as null)."""

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, float) and v != v:
            return None
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads(num)`` (None: leave as is)."""
    old = torch.get_num_threads()
    if num:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bar_plot(
    path: Path,
    labels: Sequence[str],
    series: Dict[str, Sequence[float]],
    points: Dict[str, Sequence[Sequence[float]]] | None = None,
    ylabel: str = "",
    title: str = "",
) -> None:
    """Bars of each series per label (NaN bars skipped); ``points[series][i]`` are drawn as dots
    over bar ``i`` (e.g. the per-seed values behind a mean). Saved as PNG at ``path``."""
    plt = _pyplot()
    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5))
    for j, (key, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [0.0 if v != v else v for v in values], width, label=key)
        for x, pts in zip(xs, (points or {}).get(key, [])):
            ax.scatter([x] * len(pts), pts, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scatter_plot(
    path: Path,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    yerr: Sequence[float] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> None:
    """Labelled points with optional vertical error bars, saved as PNG at ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.errorbar(xs, ys, yerr=yerr, fmt="o", capsize=3)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
