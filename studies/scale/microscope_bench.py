"""The any-microscope benchmark's measurements (issue 31, section 3; the driver is
:mod:`studies.scale.any_microscope`, the page :mod:`studies.scale.microscope_report`).

Every field of each dataset (the first ``--limit``, by image id) is, per condition,
resized by 0.4, 0.5, 0.7, 1, 1.4, 2 or 2.5 (:func:`bmc_detectron.smear.ruler.rescaled`, the
expert boxes scaled with it) or degraded as a 20x / 40x scanner would (down 2x or 4x and back:
:class:`bmc_detectron.data.augment.ResolutionLossTransform`, boxes unchanged). The fields are
grouped into cases of ``--case-size`` and each case is counted by the library the ``bmc count``
command runs (:func:`bmc_detectron.pipeline.run_count`), once without a scale and once with the
automatic scale (``ScaleOptions(auto=True)``, what ``--auto-scale`` sets), so the per-case scale is
what is judged. A dataset given as ``NAME:CLASS,...`` is scored on those classes only (BCCD's
``WBC`` for a detector of nucleated cells); otherwise on all its boxes.

Per case: the counted cells (score >= the count threshold) matched to the expert boxes at IoU 0.5
(:func:`bmc_detectron.evaluation.count.matched_accuracy`), the scale the count chose (the factor to
the training pixels; none = 1) against the true one (the dataset's own over the training images'
pixel size, known for generated data or given with ``--base-scale NAME=X``, else the median
choice at 1x, divided by the resize factor), and whether it counted no cell at all.

Resumable: the transformed fields (``WORK/<dataset>/<condition>/fields``) and the count reports
(``.../auto_off|auto_on/<case>``, which resume field by field) are reused; ``results.json`` and
the page are rebuilt from them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from bmc_detectron.data.augment import ResolutionLossTransform
from bmc_detectron.evaluation.count import matched_accuracy
from bmc_detectron.pipeline import CellCounter, run_count
from bmc_detectron.pipeline.counter import Cell
from bmc_detectron.pipeline.run_io import SUMMARY_FILE, field_names, image_shape
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from bmc_detectron.utils.io import write_json_atomic

FACTORS = (0.4, 0.5, 0.7, 1.0, 1.4, 2.0, 2.5)
SCANNER = (2.0, 4.0)
AUTO = ("auto_off", "auto_on")


@dataclass(frozen=True)
class Condition:
    """A field resized by ``value`` (``kind="scale"``) or degraded to a scanner's resolution
    (``"scanner"``: down by ``value`` and back up)."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        text = f"{self.value:g}".replace(".", "p")
        return f"scale_{text}" if self.kind == "scale" else f"scanner_{text}x"

    @property
    def label(self) -> str:
        return f"{self.value:g}x" if self.kind == "scale" else f"scanner {self.value:g}x"

    @property
    def resize(self) -> float:
        """The factor the field's pixels are resized by (1 for a scanner degradation)."""
        return self.value if self.kind == "scale" else 1.0

    def apply(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float]]:
        """The transformed image and the exact (x, y) factors its boxes are scaled by."""
        if self.kind == "scale":
            from bmc_detectron.smear.ruler import rescaled

            return rescaled(image, self.value)
        if self.kind == "scanner":
            return ResolutionLossTransform(self.value).apply_image(image), (1.0, 1.0)
        raise ValueError(f"unknown condition kind {self.kind!r}")


def conditions(factors: Sequence[float] = FACTORS, scanner: Sequence[float] = SCANNER):
    """The benchmark's conditions: every resize factor, then every scanner degradation."""
    return [Condition("scale", float(f)) for f in factors] + [
        Condition("scanner", float(d)) for d in scanner
    ]


@dataclass
class BenchSet:
    """A dataset's fields: (image id, path) in order, each image's expert boxes (XYXY), and its
    pixel size over the training images' (None: unknown)."""

    name: str
    images: List[Tuple[int, str]]
    truth: Dict[int, np.ndarray]
    base_scale: Optional[float] = None
    classes: List[str] = field(default_factory=list)

    def cases(self, case_size: int) -> List[List[Tuple[int, str]]]:
        """The fields grouped into cases of ``case_size`` (the last one may be smaller)."""
        if case_size < 1:
            raise ValueError(f"case size must be >= 1, got {case_size}")
        return [self.images[i : i + case_size] for i in range(0, len(self.images), case_size)]


@dataclass
class CaseResult:
    """One case counted under one condition, with the automatic scale on or off."""

    dataset: str
    condition: str
    kind: str
    value: float
    auto: str
    case: int
    fields: int
    predicted: int
    ground_truth: int
    matched: int
    chosen_scale: float
    scale_source: str
    true_scale: Optional[float]
    warning_codes: List[str]


def transformed_fields(
    bench: BenchSet, cond: Condition, folder: Path
) -> Tuple[List[Path], Dict[int, np.ndarray]]:
    """The dataset's fields under ``cond`` written as PNGs into ``folder`` (reused when there)
    and their boxes scaled with them, by image id."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, truth = [], {}
    for image_id, src in bench.images:
        dst = folder / f"{image_id:06d}_{Path(src).stem}.png"
        if not dst.is_file():
            image = cv2.imread(src, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{src}: not a readable image")
            if not cv2.imwrite(str(dst), cond.apply(image)[0]):
                raise OSError(f"{dst}: cannot write the transformed field")
        shape, out_shape = image_shape(Path(src)), image_shape(dst)
        if shape is None or out_shape is None:
            raise ValueError(f"{dst}: not a readable image (delete it to write it again)")
        fy, fx = out_shape[0] / shape[0], out_shape[1] / shape[1]
        paths.append(dst)
        truth[image_id] = bench.truth[image_id] * np.array([fx, fy, fx, fy])
    return paths, truth


def count_case(
    counter: CellCounter, paths: Sequence[Path], output: Path, setup: ScaleSetup
) -> Tuple[Dict[str, List[Cell]], dict]:
    """The cells of every field (by field name) and the summary of the case's count report in
    ``output``: read when finished, else counted (resuming an interrupted run)."""
    summary_file = output / SUMMARY_FILE
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        summary = run_count(counter, paths, output, progress=False, scale=setup)
    cells = {}
    for name in field_names(list(paths)):
        record = json.loads((output / "cells" / f"{name}.json").read_text())
        cells[name] = [Cell.from_json(c) for c in record["cells"]]
    return cells, summary


def chosen_scale(summary: Mapping) -> Tuple[float, str]:
    """The factor to the training pixels the count used (1 when it used none) and its source."""
    scale = summary.get("scale") or {}
    factor = scale.get("to_training_scale")
    return (1.0 if factor is None else float(factor)), str(scale.get("source", "none"))


def run_benchmark(
    counter: CellCounter,
    setups: Mapping[str, ScaleSetup],
    benches: Sequence[BenchSet],
    conds: Sequence[Condition],
    work: Path,
    *,
    case_size: int = 5,
    count_threshold: float = 0.5,
    log=print,
) -> List[CaseResult]:
    """Every case of every dataset under every condition, counted with each setup of ``setups``
    (``auto_off`` / ``auto_on``); see the module doc."""
    results = []
    for bench in benches:
        for cond in conds:
            base = work / bench.name / cond.name
            paths, truth = transformed_fields(bench, cond, base / "fields")
            by_id = dict(zip([i for i, _ in bench.images], paths))
            for auto, setup in setups.items():
                start = time.perf_counter()
                for k, case in enumerate(bench.cases(case_size)):
                    ids = [i for i, _ in case]
                    case_paths = [by_id[i] for i in ids]
                    cells, summary = count_case(
                        counter, case_paths, base / auto / f"case{k:03d}", setup
                    )
                    results.append(
                        case_result(bench, cond, auto, k, ids, case_paths, cells, summary, truth,
                                    count_threshold)
                    )  # fmt: skip
                if log is not None:
                    log(f"{bench.name} {cond.label} {auto}: {time.perf_counter() - start:.0f} s")
    return results


def case_result(bench, cond, auto, k, ids, paths, cells, summary, truth, count_threshold):
    """The :class:`CaseResult` of one counted case."""
    names = field_names(list(paths))
    kept = {i: [c for c in cells[n] if c.det_score >= count_threshold] for i, n in zip(ids, names)}
    case_truth = {i: (truth[i], [""] * len(truth[i])) for i in ids}
    m = matched_accuracy(kept, case_truth, -math.inf)
    factor, source = chosen_scale(summary)
    true = None if bench.base_scale is None else bench.base_scale / cond.resize
    return CaseResult(
        bench.name, cond.name, cond.kind, cond.value, auto, k, len(ids), m["predicted"],
        m["ground_truth"], m["matched"], factor, source, true,
        [w["code"] if isinstance(w, dict) else str(w) for w in summary.get("warning_codes", [])],
    )  # fmt: skip


def fill_base_scale(results: List[CaseResult]) -> None:
    """Where a dataset's true scale is unknown, take the median scale chosen at 1x with the
    automatic scale on (the estimate's consistency over resizes is then what is judged)."""
    for name in {r.dataset for r in results if r.true_scale is None}:
        mine = [r for r in results if r.dataset == name]
        at_1 = [r.chosen_scale for r in mine if r.auto == "auto_on" and r.condition == "scale_1"]
        if not at_1:
            continue
        base = float(np.median(at_1))
        for r in mine:
            r.true_scale = base / (r.value if r.kind == "scale" else 1.0)


def save_results(results: Sequence[CaseResult], path: Path, meta: Mapping) -> None:
    """``results.json``: the settings and one entry per case."""
    write_json_atomic({"meta": dict(meta), "cases": [asdict(r) for r in results]}, path, indent=1)


def load_results(path: Path) -> Tuple[List[CaseResult], dict]:
    """Inverse of :func:`save_results`."""
    data = json.loads(Path(path).read_text())
    return [CaseResult(**c) for c in data["cases"]], data["meta"]
