"""The slide part of the batch scaling study: a batch of synthetic smear slides counted by one
process and by ``run_batch`` on 1, 2, 4 workers (what ``bmc batch --slides`` runs).

The slides (:func:`studies.slides.synthetic_slide.write_slide`, one seed each) are written once
into ``WORK/slides`` and reused. Each slide is counted as ``bmc count --slide`` counts it
(:func:`~bmc_detectron.counting.count_slide_file`, the scale set up per request from the
detector's training profile: the level nearest the model's pixel size, fields brought to its
scale), with the batch's default options (:class:`~bmc_detectron.batch.jobs.CaseOptions`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from bmc_detectron.batch.jobs import CaseOptions, SpecFactory, find_slides
from bmc_detectron.batch.runner import default_threads
from bmc_detectron.counting import CounterSpec, count_slide_file
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from studies.batch.measure import Run, batch_run, fresh, load_average, measured_line, rate_table
from studies.slides.synthetic_slide import cells_file, write_slide


def slide_factory(detector: Path, classifier: Optional[Path] = None) -> SpecFactory:
    """The counter of the slide part, set up for slides as ``bmc batch --slides`` sets it up
    (the detector's training profile gives the model's pixel size; default scale options)."""
    spec = CounterSpec(
        detector_config=str(detector / "config.yaml"),
        detector_weights=str(detector / "model_final.pth"),
        classifier_config=str(classifier / "config.yaml") if classifier else None,
        classifier_weights=str(classifier / "model_final.pth") if classifier else None,
        device="cpu",
    )
    return SpecFactory(spec, ScaleOptions(), slides=True)


def make_slides(work: Path, count: int, size: int) -> List[Path]:
    """``work/slides/slide<size>_NN.tif`` for NN = 0 .. count - 1 (seed NN: the slides differ),
    each written when missing (via a temporary name: a broken write is not reused)."""
    folder = work / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    slides = []
    for seed in range(count):
        path = folder / f"slide{size}_{seed:02d}.tif"
        if not path.is_file():
            part = folder / f"writing_{path.name}"
            write_slide(part, size, seed=seed)
            cells_file(part).replace(cells_file(path))
            part.replace(path)
        slides.append(path)
    return slides


def single_slides(factory: SpecFactory, slides: List[Path], out: Path) -> Run:
    """The reference: one process, the models built once, the slides counted one after the
    other with ``count_slide_file`` (the batch's default options)."""
    fresh(out)
    torch.set_num_threads(default_threads(1))  # as a batch run's single worker
    options = CaseOptions()
    load, start = load_average(), time.perf_counter()
    counter, setup = factory()
    loaded = time.perf_counter()
    cases = find_slides(slides, out)
    fields = 0
    for case in cases:
        summary = count_slide_file(
            counter,
            setup,
            case.slide,
            case.output,
            options.slide,
            uncertain_below=options.uncertain_below,
            lineage=options.lineage,
            progress=False,
        )
        fields += len(summary["fields"])
    end = time.perf_counter()
    return dict(
        engine="single process",
        workers=1,
        slides=len(cases),
        fields=fields,
        wall_s=end - start,
        load_s=loaded - start,
        load_before=load,
        load_after=load_average(),
    )


def slide_runs(
    factory: SpecFactory, slides: List[Path], work: Path, engines: List[str], workers: List[int]
) -> List[Run]:
    """The single process, then every engine at every worker count, on the same slides."""
    runs = [single_slides(factory, slides, work / "slides_single")]
    print(json.dumps(runs[-1]), flush=True)
    for engine in engines:
        for n in workers:
            out = work / f"slides_{engine}_{n}"
            fresh(out)
            run = batch_run(factory, find_slides(slides, out), work / "slides_single", engine, n)
            run["slides"] = run.pop("cases")
            runs.append(run)
            print(json.dumps(run), flush=True)
    return runs


def slide_facts(reference: Path) -> Dict[str, Any]:
    """What the reference counted (its report folders): the slides' pixel size, the level and
    resize of the count, the target, how many slides reached it, the cells in all."""
    summaries = [json.loads(p.read_text()) for p in sorted(reference.glob("*/summary.json"))]
    slide, scale = summaries[0]["slide"], summaries[0]["scale"]
    fields = [len(s["fields"]) for s in summaries]
    return dict(
        microns_per_pixel=slide["microns_per_pixel"],
        level=slide["level"],
        level_mpp=slide["levels"][slide["level"]]["microns_per_pixel"],
        factor=scale.get("factor"),
        model_mpp=(scale.get("model") or {}).get("microns_per_pixel"),
        target_cells=slide["target_cells"],
        reached=sum(bool(s["slide"]["reached"]) for s in summaries),
        fields_range=[min(fields), max(fields)],
        cells=sum(s["counted"] for s in summaries),
    )


def slides_section(part: Dict[str, Any]) -> List[str]:
    """The page's section on the slides: what was counted, how, and the table."""
    runs, f = part["runs"], part["facts"]
    single = runs[0]
    models = f"`{part['detector']}`" + (
        f" and the cell classifier `{part['classifier']}`"
        if part.get("classifier")
        else " (no classifier: the detector's classes)"
    )
    return [
        "## A batch of slides",
        "",
        f"Slides: {part['count']} synthetic smear slides of {part['size']} x {part['size']} px "
        f"(`studies/slides/synthetic_slide.py`, seeds 0 to {part['count'] - 1}: the same "
        f"generator, other patches; {f['microns_per_pixel']} um/px) in `{part['dir']}`, "
        f"counted with {models}. Each slide is counted as `bmc count --slide` counts it "
        f"(`count_slide_file`): its monolayer zone in fields of 1024 px at level {f['level']} "
        f"({f['level_mpp']} um/px, resized by {f['factor']} to the model's "
        f"{f['model_mpp']} um/px), best first until {f['target_cells']} cells or the zone's "
        f"end; {single['fields']} fields and {f['cells']} cells in all ({f['reached']} of "
        f"{part['count']} slides reached {f['target_cells']}).",
        "",
        "The single process builds the models once and counts the slides one after the other; "
        "each batch run is `run_batch` over `find_slides` (what `bmc batch --slides` runs): one "
        "slide per task, the models loaded once per worker, torch threads per worker = cores / "
        "workers (at least 1). Wall times include starting the workers and loading the models "
        f"(the single process's model loading took {single['load_s']:.1f} s of its "
        f"{single['wall_s']:.1f} s). 'Reports identical': every slide's `summary.json` "
        "(without the run's facts) and `cells.csv` equal the single process's.",
        "",
        rate_table(runs, "slides", extra=("fields",)),
        "",
    ]


def slides_ceiling(
    part: Dict[str, Any], cores: int, case_seconds: Optional[float] = None
) -> List[str]:
    """What the slide runs add to the ceiling: the measured speed-ups, the slide as the task
    (its seconds against the start-up and, given ``case_seconds``, a folder case's; how the
    slides share out over the workers)."""
    runs, n, f = part["runs"], part["count"], part["facts"]
    single = runs[0]
    counting = single["wall_s"] - single["load_s"]
    shares = []
    for w in sorted({r["workers"] for r in runs[1:]}):
        rounds = math.ceil(n / w)
        last = n - (rounds - 1) * w
        idle = max(0, min(w, cores) - last)
        shares.append(
            f"on {w} worker(s) {rounds} round(s), {last} slide(s) in the last"
            + (f" ({idle} core(s) idle then)" if idle else "")
        )
    case = "" if case_seconds is None else f" (a folder case above: {case_seconds:.1f} s)"
    ones = [r for r in runs if r["workers"] == 1 and "case_s" in r]
    start = "".join(
        f" The start-up at 1 worker ({r['engine']}: {r['wall_s'] - r['case_s']:.1f} s) is "
        f"paid once per run, against {counting:.1f} s of counting in the single process."
        for r in ones[:1]
    )
    low, high = f["fields_range"]
    return [
        "Measured on the slides (speed-up = the single process's wall time / the run's): "
        + measured_line(runs, "slides"),
        "",
        "The slide batch has the same ceiling, two cores' worth of counting, for the same "
        "reason: a slide's count is CPU-bound too (decoding its tiles, its thumbnail, tissue "
        "mask and survey, then the models on its fields), "
        f"{counting / n:.1f} s a slide in the single process{case}. A task is a whole slide."
        f"{start} With {n} slides of {low} to {high} counted fields each, the split over the "
        f"workers: {'; '.join(shares)} (a round: as many slides as workers; {cores} cores). "
        "More workers than cores only share the cores. Real slides differ in size and zone, "
        "so the last slide to finish sets the batch's end: a batch of few large slides scales "
        "worse than its slide count says; spreading a slide's fields over the workers (one "
        "task per field batch, which the issue allows) would even it out, where the engines "
        "here take a slide per task.",
    ]
