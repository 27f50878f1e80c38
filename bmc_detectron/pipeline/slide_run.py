"""Count a whole slide: fields of its counting zone, best first, until enough cells are counted.

    summary = run_slide_count(counter, source, "reports/case01", target_cells=500)

``source`` is a :class:`~bmc_detectron.pipeline.field_source.FieldSource` (a slide opened by
:mod:`bmc_detectron.slides`). The slide's counting level is cut into overlapping fields of
``field_size`` px (:func:`~.tiling.tile_grid`, the overlap is the counter's tile overlap); the
source says which fields lie in the counting zone and their order. Fields are counted in that
order, each detected once; after each, the cells of all fields counted so far are merged by the
tiling merge (:func:`~.tiling.merge_tile_indices`, then the class-agnostic NMS), so a cell on
the border of two counted fields is counted once. The count stops as soon as the merged cells
in the differential (neither uncertain nor Other) reach ``target_cells`` (default 500, ICSH),
or when the zone runs out (warned).

The report folder is the folder count's (:mod:`.run`): ``run.json``, ``cells/<field>.json`` (one
per counted field, its cells *before* the merge: a resumed run reuses a field whose pixels and
settings are unchanged, and merges again), ``fields/``, ``cells.csv`` (with each cell's box in
the slide's full-resolution pixels), ``counts.csv``, ``report.html``, ``summary.json`` (with a
``slide`` entry: the slide, its levels, the zone, the fields counted) and ``overview.png`` (the
slide with its tissue, its counting zone and the counted fields, numbered in counting order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import nms
from tqdm import tqdm

from bmc_detectron.pipeline.count_warnings import (
    SLIDE_SCALE_UNKNOWN,
    TARGET_NOT_REACHED,
    CountWarning,
)
from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.pipeline.detector_view import check_strict
from bmc_detectron.pipeline.drawing import draw_field, thumbnail_data_uri
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.field_source import FieldSource
from bmc_detectron.pipeline.html_report import render_html
from bmc_detectron.pipeline.report import FieldRecord, build_summary, write_summary, write_tables
from bmc_detectron.pipeline.run import load_record, view_of_shapes
from bmc_detectron.pipeline.run_io import DRAWINGS_DIR, RESULTS_DIR, prepare_output, run_fingerprint
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScalePlan, ScaleSetup, plan_scale
from bmc_detectron.pipeline.tiling import Tile, merge_tile_indices, tile_grid
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic, write_png_atomic

logger = logging.getLogger(__name__)

ICSH_CELLS = 500  # nucleated cells of a marrow differential (ICSH 2015)
OVERVIEW_FILE = "overview.png"


def slide_plan(setup: ScaleSetup, source: FieldSource, detector: Any) -> ScalePlan:
    """The fields' rescale and stain: from the source's own pixel size to the model's (given
    on the command line, ``--microns-per-pixel`` overrides the slide's when it was opened); no
    rescale, warned, when either is unknown."""
    model = setup.model
    known = source.microns_per_pixel is not None and model is not None and model.microns_per_pixel
    options = dataclasses.replace(
        setup.options, microns_per_pixel=source.microns_per_pixel if known else None, auto=False
    )
    plan = plan_scale(dataclasses.replace(setup, options=options), {}, detector)
    if not known:
        what = "the slide's" if source.microns_per_pixel is None else "the model's"
        plan.warnings.append(
            CountWarning(
                SLIDE_SCALE_UNKNOWN,
                f"{what} pixel size is unknown: the slide's fields are counted as read, at its "
                "full resolution (give --microns-per-pixel)",
            )
        )
    return plan


def _count_field(
    counter: CellCounter,
    source: FieldSource,
    tile: Tile,
    output: Path,
    fingerprint: str,
    prep: FieldPrep,
) -> FieldRecord:
    """A field's cells (tile pixels): its saved result when still valid, else counted, saved."""
    name = f"{source.name}_x{tile.x0}_y{tile.y0}"
    image = source.read(tile)
    sha = hashlib.sha256(image.tobytes()).hexdigest()
    result_file = output / RESULTS_DIR / f"{name}.json"
    saved = load_record(result_file)
    if saved is not None and saved.fingerprint == fingerprint and saved.image_sha256 == sha:
        saved.reused = True
        return saved
    field = counter.count_field(image, None if prep.identity else prep)
    where = source.locate(tile)
    record = FieldRecord(
        name=name,
        image=where["image"],
        image_sha256=sha,
        fingerprint=fingerprint,
        height=image.shape[0],
        width=image.shape[1],
        tiles=field.tiles,
        detect_s=field.detect_s,
        recognise_s=field.recognise_s,
        cells=field.cells,
        slide=where["slide"],
    )
    write_json_atomic(record.to_json(), result_file)
    return record


def merge_fields(
    counted: Sequence[Tuple[Tile, FieldRecord]], height: int, width: int, counter: CellCounter
) -> List[FieldRecord]:
    """The counted fields with each cell kept once over all of them (:func:`merge_tile_indices`
    with the counter's edge margin, then its class-agnostic NMS); boxes stay in field pixels
    (a cell joined from pieces of several fields belongs to its best-scoring piece's field)."""
    parts = [
        (
            t,
            Detections(
                [c.box for c in r.cells], [c.det_score for c in r.cells], [0] * len(r.cells)
            ),
        )
        for t, r in counted
    ]
    boxes, keep = merge_tile_indices(parts, height, width, edge_margin=counter.edge_margin)
    scores = np.concatenate([d.scores for _, d in parts]) if parts else np.zeros(0, np.float32)
    if len(keep):
        kept = nms(torch.from_numpy(boxes), torch.from_numpy(scores[keep]), counter.nms_threshold)
        boxes, keep = boxes[kept.numpy()], keep[kept.numpy()]
    starts = np.cumsum([0] + [len(r.cells) for _, r in counted])
    cells: List[List[Any]] = [[] for _ in counted]
    for box, index in sorted(zip(boxes.tolist(), keep.tolist()), key=lambda p: p[1]):
        part = int(np.searchsorted(starts, index, side="right") - 1)
        tile, rec = counted[part]
        shifted = (box[0] - tile.x0, box[1] - tile.y0, box[2] - tile.x0, box[3] - tile.y0)
        cells[part].append(dataclasses.replace(rec.cells[index - starts[part]], box=shifted))
    return [dataclasses.replace(rec, cells=c) for (_, rec), c in zip(counted, cells)]


def in_differential(records: Sequence[FieldRecord], uncertain_below: float) -> int:
    """Cells that count in the differential's percentages (neither uncertain nor Other)."""
    return sum(
        not c.is_uncertain(uncertain_below) and not c.is_other for r in records for c in r.cells
    )


def count_zone(
    counter: CellCounter,
    source: FieldSource,
    output: Path,
    fingerprint: str,
    prep: FieldPrep,
    order: Sequence[Tile],
    target_cells: int,
    uncertain_below: float,
    progress: bool = True,
) -> List[Tuple[Tile, FieldRecord]]:
    """Count the fields in ``order`` until the merged cells reach ``target_cells``; returns the
    counted fields with their merged records."""
    counted: List[Tuple[Tile, FieldRecord]] = []
    merged: List[FieldRecord] = []
    bar = tqdm(order, desc="counting", unit="field", disable=not progress)
    for tile in bar:
        counted.append((tile, _count_field(counter, source, tile, output, fingerprint, prep)))
        merged = merge_fields(counted, source.height, source.width, counter)
        done = in_differential(merged, uncertain_below)
        bar.set_postfix(cells=done)
        if done >= target_cells:
            break
    bar.close()
    return [(t, r) for (t, _), r in zip(counted, merged)]


def _draw(
    source: FieldSource,
    counted: Sequence[Tuple[Tile, FieldRecord]],
    class_names: Sequence[str],
    output: Path,
    uncertain_below: float,
) -> Tuple[Dict[str, str], Dict[str, str]]:
    drawings, thumbs = {}, {}
    for tile, rec in counted:
        drawn = draw_field(source.read(tile), rec.cells, class_names, uncertain_below)
        rel = f"{DRAWINGS_DIR}/{rec.name}.png"
        write_png_atomic(output / rel, drawn)
        drawings[rec.name], thumbs[rec.name] = rel, thumbnail_data_uri(drawn)
    return drawings, thumbs


def _report(
    counter: CellCounter,
    source: FieldSource,
    output: Path,
    counted: Sequence[Tuple[Tile, FieldRecord]],
    plan: ScalePlan,
    settings: Dict[str, Any],
    fingerprint: str,
    *,
    target_cells: int,
    zone_fields: int,
    grid: int,
    field_size: int,
    uncertain_below: float,
    lineage: Optional[Lineage],
) -> Dict[str, Any]:
    """Write the report of the counted fields (drawings, overview, tables, page, summary last)."""
    records = [r for _, r in counted]
    done = in_differential(records, uncertain_below)
    warnings = list(plan.warnings)
    if done < target_cells:
        warnings.append(
            CountWarning(
                TARGET_NOT_REACHED,
                f"the counting zone ({zone_fields} fields) holds {done} cells, fewer than the "
                f"{target_cells} asked for",
            )
        )
    for text in warnings:
        logger.warning("%s", text)
    class_names = counter.class_names
    drawings, thumbs = _draw(source, counted, class_names, output, uncertain_below)
    summary = build_summary(
        records,
        [],
        class_names,
        uncertain_below=uncertain_below,
        lineage=lineage or Lineage(),
        settings={**settings, "fingerprint": fingerprint, "sources": counter.sources()},
        drawings=drawings,
        scale=plan.summary,
        warnings=warnings,
    )
    overview = source.overview([t for t, _ in counted])
    write_png_atomic(output / OVERVIEW_FILE, overview)
    summary["slide"] = {
        **source.describe(),
        "fields_scored": grid,
        "fields_in_zone": zone_fields,
        "fields_counted": len(counted),
        "field_size": field_size,
        "target_cells": target_cells,
        "reached": done >= target_cells,
        "overview": OVERVIEW_FILE,
    }
    write_tables(output, summary, records)
    page = render_html(summary, thumbs, output.name, thumbnail_data_uri(overview, max_side=1024))
    atomic_write_text(output / "report.html", page)
    write_summary(output, summary)
    return summary


def run_slide_count(
    counter: CellCounter,
    source: FieldSource,
    output: Path,
    *,
    target_cells: int = ICSH_CELLS,
    field_size: int = 1024,
    uncertain_below: float = 0.5,
    lineage: Optional[Lineage] = None,
    overwrite: bool = False,
    progress: bool = True,
    scale: Optional[ScaleSetup] = None,
) -> Dict[str, Any]:
    """Count ``source``'s counting zone into the report folder ``output`` (module doc).

    ``scale``: the model's scale and the stain option (:func:`~.scale_plan.make_setup`; its
    ``microns_per_pixel`` and ``auto`` are not used: the source's pixel size is). Raises
    ValueError for a bad target or field size, :class:`~.run_io.OutputExistsError` for a
    finished report without ``overwrite`` and :class:`~.detector_view.ScaleMismatchError` when
    the options are ``strict_scale`` and the detector would see the fields' cells far from their
    training size (else a ``detector_scale`` warning). Returns the summary (as written to
    summary.json).
    """
    if target_cells < 1:
        raise ValueError(f"the number of cells to count must be at least 1, got {target_cells}")
    if field_size <= counter.tile_overlap:
        raise ValueError(f"field size {field_size} must exceed the overlap {counter.tile_overlap}")
    output = Path(output)
    setup = scale or ScaleSetup(ScaleOptions())
    plan = slide_plan(setup, source, counter.detector)
    view = view_of_shapes(counter, {"slide field": (field_size, field_size)}, plan, setup)
    check_strict(view, setup.options.strict_scale)
    plan.summary["detector_input"] = view.to_json()
    plan.warnings.extend(view.warnings())
    settings = {**counter.settings(), "slide": {**source.settings(), "field_size": field_size}}
    if not plan.prep.identity:
        settings["field_prep"] = plan.prep.settings()
    fingerprint = run_fingerprint(settings)
    state = prepare_output(output, fingerprint, overwrite)
    logger.info("%s: output folder was %s", output, state)
    grid = tile_grid(source.height, source.width, field_size, counter.tile_overlap)
    scores = source.score_fields(grid)
    order = sorted(
        (i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i)
    )
    counted = count_zone(
        counter,
        source,
        output,
        fingerprint,
        plan.prep,
        [grid[i] for i in order],
        target_cells,
        uncertain_below,
        progress,
    )
    return _report(
        counter,
        source,
        output,
        counted,
        plan,
        settings,
        fingerprint,
        target_cells=target_cells,
        zone_fields=len(order),
        grid=len(grid),
        field_size=field_size,
        uncertain_below=uncertain_below,
        lineage=lineage,
    )
