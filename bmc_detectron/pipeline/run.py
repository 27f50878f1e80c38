"""A counting run over the fields of one case: resumable, every output written atomically.

Output folder layout::

    run.json              written first: the run's fingerprint (models + settings)
    checks/<field>.json   with a training profile or a scale estimate: the field's red-cell
                          diameter and colour statistics, measured before any field is counted
    cells/<field>.json    one per field, written as soon as the field is counted
    fields/<field>.png    each field drawn with its cells (Visualizer, the classes' colours)
    cells.csv             one row per cell
    counts.csv            one row per class + a total
    report.html           the self-contained report
    summary.json          written last: a folder with it holds a *finished* report

Finished or interrupted: a folder with ``summary.json`` holds a finished report and is refused
unless ``overwrite`` (which deletes the report files and drawings first). A folder with
``run.json`` but no ``summary.json`` is an interrupted run and is resumed. In both cases a field's
saved result is reused only when the image's bytes (SHA-256) and the run's fingerprint (model
configs and weights, thresholds, tiling, and the fields' rescale factor and stain normalisation)
are unchanged; otherwise it is counted again. A non-empty folder with neither file is refused
unless ``overwrite``; the temp file of a write the run was killed in (``.run.json.*.tmp``) does
not count, and such files are removed when a run starts.

Scale and stain (:mod:`.field_checks`, :mod:`.auto_scale`, :mod:`.scale_plan`,
:mod:`.field_prep`): with a :class:`~.scale_plan.ScaleSetup` every field is first measured (red
cells, colour); the case's rescale factor follows (given micrometres per pixel, or found: the
files' pixel size, the detector probe, the red cells' median), fields are
counted at it, and each field gets the reasons it lies outside the training data (``flags``),
which the summary and the report show.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from bmc_detectron.pipeline.auto_scale import check_settled, find_scale
from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.detector_view import DetectorView, check_strict, detector_view
from bmc_detectron.pipeline.drawing import draw_field, thumbnail_data_uri
from bmc_detectron.pipeline.field_checks import (
    CHECKS_DIR,
    FieldSurvey,
    boxes_fraction,
    few_cells_warning,
    field_flags,
    load_survey,
    measure_field,
    nucleus_fraction,
    save_survey,
    survey_key,
)
from bmc_detectron.pipeline.field_prep import FieldPrep
from bmc_detectron.pipeline.html_report import render_html
from bmc_detectron.pipeline.report import FieldRecord, build_summary, write_summary, write_tables
from bmc_detectron.pipeline.run_io import (
    DRAWINGS_DIR,
    RESULTS_DIR,
    SkippedInput,
    decode_image,
    field_names,
    image_shape,
    prepare_output,
    read_bytes,
    read_field,
    run_fingerprint,
    write_state,
)
from bmc_detectron.pipeline.scale_plan import ScalePlan, ScaleSetup
from bmc_detectron.structures.differential import Lineage
from bmc_detectron.utils.io import (
    atomic_write_text,
    write_json_atomic,
    write_png_atomic,
)

logger = logging.getLogger(__name__)


def load_record(path: Path) -> Optional[FieldRecord]:
    """A saved field result (None: none, or unusable: warned)."""
    try:
        return FieldRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("%s: unusable saved result (%s); counting the field again", path, e)
        return None


def count_one(
    counter: CellCounter,
    path: Path,
    name: str,
    output: Path,
    fingerprint: str,
    prep: Optional[FieldPrep] = None,
    checks: Tuple[Optional[float], List[str]] = (None, []),
) -> FieldRecord:
    """The cells of one input: its saved result when still valid, else counted and saved;
    ``checks``: the field's red-cell diameter and flags, saved with it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SkippedInput(f"cannot read the file: {e.strerror or e}") from None
    sha = hashlib.sha256(data).hexdigest()
    result_file = output / RESULTS_DIR / f"{name}.json"
    saved = load_record(result_file)
    if saved is not None and saved.fingerprint == fingerprint and saved.image_sha256 == sha:
        saved.name, saved.image, saved.reused = name, str(path), True
        if (saved.rbc_diameter_px, saved.flags) != checks:  # e.g. another training profile
            saved.rbc_diameter_px, saved.flags = checks[0], list(checks[1])
            write_json_atomic(saved.to_json(), result_file)
        return saved
    image = decode_image(data, path)
    if prep is None or prep.identity:
        field = counter.count_field(image)
    else:
        field = counter.count_field(image, prep)
    record = FieldRecord(
        name=name,
        image=str(path),
        image_sha256=sha,
        fingerprint=fingerprint,
        height=image.shape[0],
        width=image.shape[1],
        tiles=field.tiles,
        detect_s=field.detect_s,
        recognise_s=field.recognise_s,
        cells=field.cells,
        rbc_diameter_px=checks[0],
        flags=list(checks[1]),
        nucleus_fraction=round(nucleus_fraction(image), 5),
    )
    write_json_atomic(record.to_json(), result_file)
    return record


def _checks(
    name: str,
    plan: Optional[ScalePlan],
    setup: Optional[ScaleSetup],
    surveys: Optional[Dict[str, FieldSurvey]],
) -> Tuple[Optional[float], List[str]]:
    """A field's measured red-cell diameter and out-of-distribution flags."""
    survey = (surveys or {}).get(name)
    if survey is None or plan is None or setup is None:
        return None, []
    rbc = round(survey.rbc_px, 2) if np.isfinite(survey.rbc_px) else None
    return rbc, field_flags(name, survey, plan, setup)


def survey_fields(
    counter: CellCounter,
    inputs: Sequence[Path],
    output: Path,
    setup: ScaleSetup,
    progress: bool = True,
) -> Dict[str, FieldSurvey]:
    """Measure every readable input (reusing ``checks/`` when still valid); by field name."""
    key = survey_key(counter, setup)
    surveys: Dict[str, FieldSurvey] = {}
    pairs = list(zip(inputs, field_names(inputs)))
    for path, name in tqdm(pairs, desc="measuring", unit="field", disable=not progress):
        try:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            cache = output / CHECKS_DIR / f"{name}.json"
            survey = load_survey(cache, sha, key)
            if survey is None:
                survey = measure_field(decode_image(data, path), sha, key, counter, setup)
                save_survey(cache, survey)
        except (OSError, SkippedInput):
            continue  # the count lists it as skipped
        surveys[name] = survey
    return surveys


def count_fields(
    counter: CellCounter,
    inputs: Sequence[Path],
    output: Path,
    fingerprint: str,
    progress: bool = True,
    plan: Optional[ScalePlan] = None,
    setup: Optional[ScaleSetup] = None,
    surveys: Optional[Dict[str, FieldSurvey]] = None,
) -> Tuple[List[FieldRecord], List[Dict[str, str]]]:
    """Count every input (progress bar with ETA); unreadable ones are listed with the reason.
    With a ``plan`` the fields are prepared by it and flagged
    (:func:`~.field_checks.field_flags`)."""
    records, skipped = [], []
    bar = tqdm(
        list(zip(inputs, field_names(inputs))), desc="counting", unit="field", disable=not progress
    )
    prep = None if plan is None else plan.prep
    for path, name in bar:
        checks = _checks(name, plan, setup, surveys)
        try:
            records.append(count_one(counter, path, name, output, fingerprint, prep, checks))
        except SkippedInput as e:
            logger.warning("%s: skipped (%s)", path, e)
            skipped.append({"image": str(path), "reason": str(e)})
    return records, skipped


def draw_fields(
    records: Sequence[FieldRecord],
    class_names: Sequence[str],
    output: Path,
    uncertain_below: float,
    progress: bool = True,
) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Write ``fields/<name>.png``; returns name -> drawing path and name -> thumbnail URI."""
    drawings, thumbs = {}, {}
    for rec in tqdm(records, desc="drawing", unit="field", disable=not progress):
        path = Path(rec.image)
        try:
            image = decode_image(path.read_bytes(), path)
        except (OSError, SkippedInput) as e:
            logger.warning("%s: cannot draw the field (%s)", path, e)
            continue
        drawn = draw_field(image, rec.cells, class_names, uncertain_below)
        rel = f"{DRAWINGS_DIR}/{rec.name}.png"
        write_png_atomic(output / rel, drawn)
        drawings[rec.name], thumbs[rec.name] = rel, thumbnail_data_uri(drawn)
    return drawings, thumbs


def view_of_fields(
    counter: CellCounter, inputs: Sequence[Path], plan: ScalePlan, setup: ScaleSetup
) -> DetectorView:
    """The size at which the detector sees each field's cells against its training size
    (:mod:`.detector_view`)."""
    shapes = {n: image_shape(p) for p, n in zip(inputs, field_names(inputs))}
    return view_of_shapes(counter, {n: s for n, s in shapes.items() if s is not None}, plan, setup)


def view_of_shapes(
    counter: CellCounter,
    shapes: Dict[str, Tuple[int, int]],
    plan: ScalePlan,
    setup: ScaleSetup,
) -> DetectorView:
    """:func:`view_of_fields` for fields known by their (height, width) (e.g. a slide's)."""
    model = setup.model
    return detector_view(
        counter.detector,
        shapes,
        plan.prep,
        tile_size=counter.tile_size,
        to_training=plan.to_training,
        image_size=None if model is None else model.image_size,
        tolerance=setup.options.detector_scale_tolerance,
    )


def find_case_scale(
    counter: CellCounter,
    inputs: Sequence[Path],
    setup: ScaleSetup,
    surveys: Dict[str, FieldSurvey],
) -> ScalePlan:
    """The case's scale plan (:func:`~.auto_scale.find_scale`) from the input files."""
    return find_scale(
        setup,
        counter.detector,
        surveys,
        names=field_names(inputs),
        data=lambda i: read_bytes(inputs[i]),
        image=lambda i: read_field(inputs[i]),
    )


def _found_cells(records: Sequence[FieldRecord]) -> List[Tuple[str, Optional[float], float]]:
    return [
        (r.name, r.nucleus_fraction, boxes_fraction([c.box for c in r.cells], r.height, r.width))
        for r in records
    ]


def run_count(
    counter: CellCounter,
    inputs: Sequence[Path],
    output: Path,
    *,
    uncertain_below: float = 0.5,
    lineage: Optional[Lineage] = None,
    overwrite: bool = False,
    progress: bool = True,
    scale: Optional[ScaleSetup] = None,
) -> Dict[str, Any]:
    """Count the cells of every input field and write the report into ``output``.

    ``scale``: the scale and stain options with the model's scale and training profile
    (:func:`~.scale_plan.make_setup`); None counts every field as it is.

    Raises ValueError for an empty input list, :class:`OutputExistsError` for a finished
    report without ``overwrite`` and :class:`~.detector_view.ScaleMismatchError` when the
    options are ``strict_scale`` and the detector would see a field's cells far from their
    training size or (with ``auto``) the scale is not settled
    (:class:`~.auto_scale.ScaleUnsettledError`). Returns the summary (as written to summary.json).
    """
    if not inputs:
        raise ValueError("no input images")
    output, inputs = Path(output), list(inputs)
    setup = scale or ScaleSetup()
    settings = counter.settings()
    state = prepare_output(output, run_fingerprint(settings), overwrite)
    logger.info("%s: output folder was %s", output, state)
    surveys = {}
    if setup.survey_needed:
        surveys = survey_fields(counter, inputs, output, setup, progress)
    plan = find_case_scale(counter, inputs, setup, surveys)
    check_settled(plan, setup)
    view = view_of_fields(counter, inputs, plan, setup)
    check_strict(view, setup.options.strict_scale)
    plan.summary["detector_input"] = view.to_json()
    for text in view.warnings():
        logger.warning("%s", text)
    if not plan.prep.identity:
        settings = {**settings, "field_prep": plan.prep.settings()}
        write_state(output, run_fingerprint(settings))
    fingerprint = run_fingerprint(settings)
    records, skipped = count_fields(
        counter, inputs, output, fingerprint, progress, plan, setup, surveys
    )
    few = few_cells_warning(_found_cells(records))
    for text in few:
        logger.warning("%s", text)
    warnings = [*plan.warnings, *view.warnings(), *few]
    class_names = counter.class_names
    drawings, thumbs = draw_fields(records, class_names, output, uncertain_below, progress)
    summary = build_summary(
        records,
        skipped,
        class_names,
        uncertain_below=uncertain_below,
        lineage=lineage or Lineage(),
        settings={**settings, "fingerprint": fingerprint, "sources": counter.sources()},
        drawings=drawings,
        scale=plan.summary,
        warnings=warnings,
    )
    write_tables(output, summary, records)
    atomic_write_text(output / "report.html", render_html(summary, thumbs, output.name))
    write_summary(output, summary)
    return summary
