"""The work behind the API: count uploaded fields, and the case report of the visible cells.

:func:`analyze_case` runs in a worker thread: it finds the case's scale
(:func:`plan_uploads`, the count command's :func:`~bmc_detectron.pipeline.auto_scale.find_scale`)
then decodes and counts one field at a time (:func:`analyze_uploads`), so a request holds at
most one decoded image (the probe's sample aside, at most four). :func:`case_records` turns
what the page shows (cells above the confidence slider, classes switched on) into the
pipeline's records, so the summary JSON and cells CSV are made by the same code as the count
tool's (:mod:`..pipeline.report`).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.data.classes import OTHER
from bmc_detectron.pipeline.auto_scale import ScaleUnsettledError, check_settled, find_scale
from bmc_detectron.pipeline.count_warnings import warning_entries
from bmc_detectron.pipeline.counter import Cell, CellCounter
from bmc_detectron.pipeline.detector_view import detector_view
from bmc_detectron.pipeline.drawing import thumbnail_data_uri
from bmc_detectron.pipeline.field_checks import (
    boxes_fraction,
    few_cells_warning,
    field_flags,
    measure_field,
    nucleus_fraction,
)
from bmc_detectron.pipeline.report import FieldRecord
from bmc_detectron.pipeline.scale_plan import ScalePlan, ScaleSetup
from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.serve.errors import ApiError
from bmc_detectron.serve.images import Probe, decode_image
from bmc_detectron.serve.schemas import SummaryRequest
from bmc_detectron.serve.uploads import Upload


def field_name(filename: str, index: int, taken: set) -> str:
    """A safe, unique (within ``taken``) field name from a display file name."""
    stem = filename.rsplit(".", 1)[0] if "." in filename[1:] else filename
    base = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:80] or f"field-{index + 1}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def _checks(
    image: Any,
    name: str,
    counter: CellCounter,
    plan: Optional[ScalePlan],
    setup: Optional[ScaleSetup],
) -> Dict[str, Any]:
    """The field's red-cell diameter and out-of-distribution flags (with a training profile)."""
    if plan is None or setup is None or setup.profile is None:
        return {"rbc_diameter_px": None, "flags": []}
    survey = measure_field(image, "", "serve", counter, setup, detector_ruler=False)
    rbc = round(survey.rbc_px, 2) if np.isfinite(survey.rbc_px) else None
    return {"rbc_diameter_px": rbc, "flags": field_flags(name, survey, plan, setup)}


def plan_uploads(
    counter: CellCounter, uploads: Sequence[Upload], settings: ServeSettings, setup: ScaleSetup
) -> ScalePlan:
    """The uploads' scale plan, found as the count command finds a case's
    (:func:`~bmc_detectron.pipeline.auto_scale.find_scale`: the given pixel size, the files'
    own, the detector probe on a sample of the uploads; no red-cell survey here)."""
    taken: set = set()
    names = [field_name(u.filename, u.index, taken) for u in uploads]
    return find_scale(
        setup,
        counter.detector,
        {},
        names=names,
        data=lambda i: uploads[i].data,
        image=lambda i: decode_image(uploads[i], settings.max_pixels),
    )


def analyze_case(
    counter: CellCounter,
    uploads: Sequence[Upload],
    probes: Sequence[Probe],
    settings: ServeSettings,
    preview: bool,
    setup: ScaleSetup,
) -> Tuple[ScalePlan, List[Dict[str, Any]]]:
    """The uploads' scale plan (:func:`plan_uploads`) and their fields counted at it
    (:func:`analyze_uploads`). Raises :class:`ApiError` (422 ``scale_unsettled``) when the
    scale is not settled and ``setup`` is strict."""
    plan = plan_uploads(counter, uploads, settings, setup)
    try:
        check_settled(plan, setup)
    except ScaleUnsettledError as e:
        raise ApiError(422, "scale_unsettled", str(e)) from None
    return plan, analyze_uploads(counter, uploads, probes, settings, preview, plan, setup)


def analyze_uploads(
    counter: CellCounter,
    uploads: Sequence[Upload],
    probes: Sequence[Probe],
    settings: ServeSettings,
    preview: bool,
    plan: Optional[ScalePlan] = None,
    setup: Optional[ScaleSetup] = None,
) -> List[Dict[str, Any]]:
    """Decode and count each upload (in order); the analyze response's ``fields``. With a
    ``plan`` each field is rescaled / normalised by it and, with a training profile in
    ``setup``, checked against the training data (``flags``)."""
    fields, taken = [], set()
    prep = None if plan is None or plan.prep.identity else plan.prep
    for upload, probe in zip(uploads, probes):
        start = time.perf_counter()
        image = decode_image(upload, settings.max_pixels)
        decode_s = time.perf_counter() - start
        counted = counter.count_field(image) if prep is None else counter.count_field(image, prep)
        name = field_name(upload.filename, upload.index, taken)
        uri = None
        if preview:
            uri = thumbnail_data_uri(image[:, :, ::-1], settings.preview_max_side, quality=88)
        fields.append(
            {
                "name": name,
                "filename": upload.filename,
                "format": probe.format,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "sha256": hashlib.sha256(upload.data).hexdigest(),
                "tiles": counted.tiles,
                "decode_s": round(decode_s, 4),
                "detect_s": round(counted.detect_s, 4),
                "recognise_s": round(counted.recognise_s, 4),
                "cells": [c.to_json() for c in counted.cells],
                "preview": uri,
                "nucleus_fraction": round(nucleus_fraction(image), 5),
                **_checks(image, name, counter, plan, setup),
            }
        )
        del image
    return fields


def case_records(
    request: SummaryRequest, class_names: Sequence[str], fingerprint: str
) -> List[FieldRecord]:
    """The fields' records with only the visible cells: score >= ``min_score``, class on.

    Raises :class:`ApiError` (422) for a cell whose class the model does not have (Other, the
    open-set outcome, is always allowed).
    """
    known = {*class_names, OTHER.abbr}
    excluded = set(request.excluded_classes)
    records = []
    for field in request.fields:
        cells = []
        for cell in field.cells:
            if cell.label not in known:
                raise ApiError(
                    422,
                    "unknown_class",
                    f"field {field.name}: class {cell.label!r} is not one of the model's",
                )
            if cell.probs is not None and len(cell.probs) != len(class_names):
                raise ApiError(422, "invalid_request", f"field {field.name}: wrong probs length")
            if cell.det_score >= request.min_score and cell.label not in excluded:
                cells.append(Cell.from_json(cell.model_dump()))
        records.append(
            FieldRecord(
                name=field.name,
                image=field.filename,
                image_sha256=field.sha256,
                fingerprint=fingerprint,
                height=field.height,
                width=field.width,
                tiles=field.tiles,
                detect_s=field.detect_s,
                recognise_s=field.recognise_s,
                cells=cells,
            )
        )
    return records


def scale_summary(
    counter: CellCounter, fields: Sequence[Dict[str, Any]], plan: ScalePlan, setup: ScaleSetup
) -> Dict[str, Any]:
    """The analyze response's ``scale``: the plan's entry, the size at which the detector saw
    each field (:mod:`~bmc_detectron.pipeline.detector_view`) and the warnings (sentences under
    ``warnings``, with codes under ``warning_codes``), as the count's summary has them."""
    view = detector_view(
        counter.detector,
        {f["name"]: (f["height"], f["width"]) for f in fields},
        plan.prep,
        tile_size=counter.tile_size,
        to_training=plan.to_training,
        image_size=None if setup.model is None else setup.model.image_size,
        tolerance=setup.options.detector_scale_tolerance,
    )
    found = []
    for f in fields:
        covered = boxes_fraction([c["box"] for c in f["cells"]], f["height"], f["width"])
        found.append((f["name"], f["nucleus_fraction"], covered))
    warnings = [*plan.warnings, *view.warnings(), *few_cells_warning(found)]
    return {
        **plan.summary,
        "detector_input": view.to_json(),
        "warnings": [str(w) for w in warnings],
        "warning_codes": warning_entries(warnings),
    }


#: the stored image's suffix for a decoded format (anything else is kept as .png: the bytes
#: are the upload's, the suffix only names the file in the store)
FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def field_records(fields: Sequence[Dict[str, Any]], fingerprint: str) -> List[FieldRecord]:
    """The analyze response's fields as the count's records (every cell): what
    :func:`bmc_detectron.cases.importer.add_case` keeps of a count made in the page. The
    record's ``image`` is the field's safe name with the format's suffix, never the upload's
    own file name."""
    return [
        FieldRecord(
            name=f["name"],
            image=f["name"] + FORMAT_SUFFIX.get(str(f.get("format", "")).upper(), ".png"),
            image_sha256=f["sha256"],
            fingerprint=fingerprint,
            height=f["height"],
            width=f["width"],
            tiles=f["tiles"],
            detect_s=f["detect_s"],
            recognise_s=f["recognise_s"],
            cells=[Cell.from_json(c) for c in f["cells"]],
            flags=list(f.get("flags") or []),
        )
        for f in fields
    ]
