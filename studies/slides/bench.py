"""The slide benchmark (issue 27, section 1): a synthetic 40k x 40k px smear slide counted to a
500-cell differential, timed step by step, with the peak memory (not a timed test).

    OMP_NUM_THREADS=1 python -m studies.slides.bench --size 40000 --out output/slides \
        --page docs/results/slides/RESULTS_slides.md

The slide (:mod:`studies.slides.synthetic_slide`) is written once, in a child process, into
``OUT/slide<size>.tif``. The count runs here, as ``count --slide`` does, with a stand-in
detector (:class:`NucleusBlobs`: the nucleus-stained blobs of a field, boxed with a margin) unless
``--detector-config`` / ``--detector-weights`` give real models: it times the slide machinery
(reading, zone, fields, merge, report), not a model. The peak resident memory of this process
(``ru_maxrss``) is reported: the slide is never read whole.

The slide's known cells (``OUT/slide<size>_cells.csv``, written with it) score the count
(:mod:`studies.slides.score`: recall, precision, the differential against the known one), kept
in ``OUT/bench.json``. A small slide scores in a minute or two; the page can take the timing of a
cached large run and the score of a small one:

    OMP_NUM_THREADS=1 python -m studies.slides.bench --size 8000 --out output/slides_small \
        --detector-config output/demo/detector/config.yaml \
        --detector-weights output/demo/detector/model_final.pth --time-detector ''
    python -m studies.slides.bench --cached --out output/slides --score-from output/slides_small \
        --page docs/results/slides/RESULTS_slides.md

(``--cached``: no slide written or counted, the page from ``OUT/bench.json`` and
``OUT/report/summary.json``.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import cv2
import numpy as np

from bmc_detectron.counting import CounterSpec, build_counter, scale_setup
from bmc_detectron.data.classes import MARROW_CLASSES
from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup
from bmc_detectron.pipeline.slide_run import run_slide_count
from bmc_detectron.pipeline.tiling import tile_grid
from bmc_detectron.slides.reader import open_slide
from bmc_detectron.slides.source import SlideSource
from bmc_detectron.smear.stain import nucleus_mask
from studies.pages import PageText, copy_figure, today, write_page
from studies.slides.score import score_count
from studies.slides.synthetic_slide import cells_file, write_slide

DRIVER = "OMP_NUM_THREADS=1 python -m studies.slides.bench"


class NucleusBlobs:
    """Stand-in detector: each blob of nucleus-stained pixels (closed, at least ``min_px``),
    boxed with 40 % of its size around it (the cytoplasm)."""

    class_names = ["cell"]

    def __init__(self, min_px: int = 60) -> None:
        self.min_px = min_px

    def __call__(self, image: np.ndarray) -> Detections:
        mask = nucleus_mask(image, "BGR").astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = []
        for x, y, w, h, area in stats[1:]:
            if area >= self.min_px:
                mx, my = 0.4 * w, 0.4 * h
                boxes.append([x - mx, y - my, x + w + mx, y + h + my])
        h, w = image.shape[:2]
        boxes = np.clip(np.array(boxes, np.float32).reshape(-1, 4), 0, [w, h, w, h])
        return Detections(boxes, [0.9] * len(boxes), [0] * len(boxes))


def _write(path: str, size: int, out: str) -> None:
    Path(out).write_text(json.dumps(write_slide(Path(path), size)))


def make_slide(out: Path, size: int) -> Dict[str, Any]:
    """``out/slide<size>.tif``, written by a child process when missing; its write times."""
    path, times = out / f"slide{size}.tif", out / f"slide{size}.json"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        child = multiprocessing.get_context("spawn").Process(
            target=_write, args=(str(path), size, str(times))
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"writing {path} failed ({child.exitcode})")
    return {"file": str(path), "bytes": path.stat().st_size, **json.loads(times.read_text())}


def count(
    slide_file: str,
    report: Path,
    counter: CellCounter,
    target: int,
    scale: Optional[ScaleSetup] = None,
) -> Dict[str, Any]:
    """Count the slide into ``report`` (``scale``: the model's scale, as ``bmc count`` builds it);
    the seconds of each step and the summary."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with open_slide(slide_file) as slide:
        source = SlideSource(slide, 0)
        t1 = time.perf_counter()
        grid = tile_grid(source.height, source.width, 1024, counter.tile_overlap)
        source.score_fields(grid)
        t2 = time.perf_counter()
        summary = run_slide_count(
            counter,
            source,
            report,
            target_cells=target,
            overwrite=True,
            progress=False,
            scale=scale,
        )
        t3 = time.perf_counter()
    return {
        "open_thumbnail_s": round(t1 - t0, 2),
        "survey_s": round(t2 - t1, 2),
        "count_report_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(before, 1),
        "summary": summary,
    }


def detector_seconds(config: str, work: Path, fields: int = 3) -> float:
    """Seconds per 1024 px field of the detector ``config`` builds (randomly initialised: the
    same computation as trained weights) with its test resize off, as the count runs it on a
    field brought to the model's scale; after one warm-up."""
    import torch
    from detectron2.modeling import build_model

    from bmc_detectron.config import build_cfg
    from bmc_detectron.pipeline import Detector
    from bmc_detectron.pipeline.field_prep import unresized

    torch.manual_seed(0)
    weights = work / "random_detector.pth"
    model = build_model(build_cfg(config, ["MODEL.DEVICE", "cpu"]))
    torch.save({"model": model.state_dict()}, weights)
    detector = unresized(Detector.from_config(config, str(weights), ["MODEL.DEVICE", "cpu"]))
    image = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    detector(image)
    start = time.perf_counter()
    for _ in range(fields):
        detector(image)
    return (time.perf_counter() - start) / fields


def shrink_png(path: Path) -> None:
    """Re-save a figure with a 256-colour palette (a quarter of the bytes)."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def page_text(bench: Dict[str, Any], figure: str) -> str:
    """The results page."""
    s, w = bench["count"]["summary"], bench["slide"]
    info, c = s["slide"], bench["count"]
    page = PageText().line("# Whole slides: a 40k x 40k px smear to a 500-cell differential", "")
    command = " ".join([DRIVER, shlex.join(bench.get("argv", []))]).strip()
    page.line(
        f"Generated by `{command}` on {bench.get('date') or today()} ({bench['machine']}).", ""
    )
    page.line(
        f"A synthetic smear slide of {bench['size']} x {bench['size']} px (pyramidal JPEG TIFF, "
        f"{w['bytes'] / 1e6:.0f} MB, levels 1, 4, 16, 64, {info['microns_per_pixel']} um/px; "
        f"written in {w['write_s']} s) counted with {bench['detector']} "
        f"(scale: {s['scale'].get('source')}, fields resized by {s['scale'].get('factor')}).",
        "",
    )
    page.line("| step | seconds |", "|---|---|")
    page.line(f"| open the slide, thumbnail, tissue mask | {c['open_thumbnail_s']} |")
    survey = f"survey the tissue and score the fields (level {info['survey_level']})"
    page.line(f"| {survey} | {c['survey_s']} |")
    page.line(f"| count the fields best first, merge, report | {c['count_report_s']} |")
    page.line(f"| **total** | **{c['total_s']}** |", "")
    if bench.get("model_s_per_field") is not None:
        per, n = bench["model_s_per_field"], info["fields_counted"]
        stand_in = s["timing"]["detect_s"] / max(1, n)
        page.line(
            f"With a real detector instead of the stand-in: `{bench['model_config']}` takes "
            f"{per:.2f} s per 1024 px field here (its test resize off, as at the model's scale; "
            "randomly initialised weights, the same "
            f"computation; the stand-in {stand_in:.2f} s), so the same {n} fields would take "
            f"about **{c['total_s'] + n * (per - stand_in):.0f} s** in all (an estimate: "
            "timed on 3 fields, not a run).",
            "",
        )
    zone = info["zone"]
    page.line(
        f"Fields of 1024 px: {info['fields_scored']} on the slide, {zone['count']} in the "
        f"counting zone ({zone['thick']} thick, {zone['empty']} empty, {zone['edge']} on its "
        f"edge, {zone['no tissue']} glass); {info['fields_counted']} counted for "
        f"{s['counted']} cells (target {info['target_cells']}). Peak resident memory "
        f"{c['peak_rss_mb']} MB, of which {c['rss_before_mb']} MB before the slide was opened "
        "(Python, torch, detectron2 imported); the level-0 image would be "
        f"{bench['size'] ** 2 * 3 / 1e9:.1f} GB.",
        "",
    )
    page.line(
        "The overview (`overview.png` of the report): thick zone orange, counting zone green, "
        "tissue outlined grey, counted fields blue, numbered in counting order.",
        "",
    )
    page.line(f"![slide overview]({figure})", "")
    return page.text()


def _run_date(bench: Dict[str, Any], bench_file: Path) -> str:
    if bench.get("date"):
        return bench["date"]
    return time.strftime("%Y-%m-%d", time.localtime(bench_file.stat().st_mtime))


def score_text(scored: Dict[str, Any], date: str) -> str:
    """The page's section on the count against the slide's known cells (``scored``: a bench
    with a ``score``, perhaps of a smaller slide than the page's timing)."""
    sc, size = scored["score"], scored["size"]
    page = PageText().line(f"## The count against the slide's known cells ({size} px slide)", "")
    command = " ".join([DRIVER, shlex.join(scored.get("argv", []))]).strip()
    page.line(
        f"Scored on a **{size} x {size} px** slide of the same generator (not the timing's "
        f"slide above), by `{command}` on {date}, counted with {scored['detector']}: the "
        "generator's cells are known (`slide<size>_cells.csv`, written with the slide). The "
        f"count's {sc['count_cells']} cells in its {sc['fields']} counted fields are matched one "
        f"to one (the project's `match_by_score`, IoU >= {sc['min_iou']}) to the known cells cut "
        f"to those fields; the {sc['truth_cells']} known cells at least half inside them are the "
        "truth (`studies/slides/score.py`).",
        "",
    )
    if not sc.get("reached", True):
        page.line(
            f"The slide is small: its counting zone ({sc['fields_in_zone']} fields, all counted) "
            f"holds fewer cells than the {sc['target_cells']} asked for.",
            "",
        )
    page.line("| recall | precision | truth cells found | count's cells matched |")
    page.line("|---|---|---|---|")
    page.line(
        f"| {sc['recall']:.3f} | {sc['precision']:.3f} | {sc['truth_matched']} of "
        f"{sc['truth_cells']} | {sc['matched']} of {sc['count_cells']} |",
        "",
    )
    count_pct = sc["count_differential"]
    page.line("| class | known % | % of the known cells found | recall | count % |")
    page.line("|---|---|---|---|---|")
    order = {c.abbr: i for i, c in enumerate(MARROW_CLASSES)}
    for c in sorted(sc["true_differential"], key=lambda c: (order.get(c, len(order)), c)):
        true = sc["true_differential"][c]
        rec = sc["recall_per_class"][c]
        shown = "n/a" if rec is None else f"{rec:.3f}"
        counted = count_pct.get(c)
        page.line(
            f"| {c} | {true:.1f} | {sc['found_differential'][c]:.1f} | {shown} | "
            f"{'-' if counted is None else f'{counted:.1f}'} |"
        )
    page.line("")
    if sc["count_vs_true_mae_pp"] is None:
        page.line(
            f"The detector is class-agnostic (the count's classes: {', '.join(count_pct)}): the "
            "count has no differential to set against the known one. What detection alone does "
            "to it: the known cells it found differ from all known cells by "
            f"{sc['found_vs_true_mae_pp']} percentage points per class on average.",
            "",
        )
    else:
        page.line(
            f"The count's differential differs from the known one by "
            f"{sc['count_vs_true_mae_pp']} percentage points per class on average (the found "
            f"known cells' by {sc['found_vs_true_mae_pp']}).",
            "",
        )
    return page.text()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=40000)
    p.add_argument("--out", default="output/slides")
    p.add_argument("--target-cells", type=int, default=500)
    p.add_argument("--detector-config")
    p.add_argument("--detector-weights")
    p.add_argument("--page", help="write the results page here")
    p.add_argument("--cached", action="store_true", help="page from OUT/bench.json: no count")
    p.add_argument("--score-from", help="the known-cells score of this bench's OUT (a small run)")
    p.add_argument(
        "--time-detector",
        default="configs/cpu/retinanet_R_18_full_cpu.yaml",
        help="time this detector per field for the estimate ('' : no)",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.cached:
        bench = json.loads((out / "bench.json").read_text())
        bench["count"]["summary"] = json.loads((out / "report" / "summary.json").read_text())
        bench["date"] = _run_date(bench, out / "bench.json")
    else:
        bench = run_bench(args, argv, out)
    scored = bench if "score" in bench else None
    if args.score_from:
        scored_file = Path(args.score_from) / "bench.json"
        scored = json.loads(scored_file.read_text())
        scored["date"] = _run_date(scored, scored_file)
    if args.page:
        page = Path(args.page)
        figure = copy_figure(out / "report" / "overview.png", page, "overview")
        shrink_png(page.parent / figure)
        text = page_text(bench, figure)
        if scored is not None:
            text += score_text(scored, scored["date"])
        write_page(page, text)
    return 0


def run_bench(args: argparse.Namespace, argv: Optional[Sequence[str]], out: Path) -> Dict[str, Any]:
    """Write the slide (once), count it, score it when its cells are known; the bench (also in
    ``OUT/bench.json``, without the summary)."""
    slide = make_slide(out, args.size)
    if args.detector_config:
        spec = CounterSpec(
            detector_config=args.detector_config,
            detector_weights=args.detector_weights,
            device="cpu",
        )
        counter, detector = build_counter(spec), args.detector_config
        scale = scale_setup(spec, counter, ScaleOptions())  # the model's scale, as bmc count
    else:
        counter = CellCounter(NucleusBlobs(), tile_size=1024, tile_overlap=128)
        detector, scale = "a stand-in detector (nucleus-stained blobs)", None
    result = count(slide["file"], out / "report", counter, args.target_cells, scale)
    bench = {
        "argv": [a for a in (argv if argv is not None else sys.argv[1:])],
        "size": args.size,
        "slide": slide,
        "count": result,
        "detector": detector,
        "machine": f"{multiprocessing.cpu_count()} cores shared with background runs, "
        f"load average {os.getloadavg()[0]:.1f} at the end, OMP_NUM_THREADS=1",
        "date": today(),
    }
    known = cells_file(Path(slide["file"]))
    if known.is_file():
        bench["score"] = score_count(out / "report", known)
    if args.time_detector:
        bench["model_config"] = args.time_detector
        bench["model_s_per_field"] = round(detector_seconds(args.time_detector, out), 3)
    (out / "bench.json").write_text(
        json.dumps(
            {**bench, "count": {k: v for k, v in result.items() if k != "summary"}}, indent=1
        )
    )
    print(
        json.dumps({k: v for k, v in result.items() if k != "summary"}),
        result["summary"]["counted"],
        json.dumps(bench.get("score")),
    )
    return bench


if __name__ == "__main__":
    sys.exit(main())
