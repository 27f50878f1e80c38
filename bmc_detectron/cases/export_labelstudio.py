"""Cases as Label Studio tasks: one task per field, the model's boxes as ``predictions`` and, for a
signed case, the reviewed boxes as an ``annotation``; and the labelling config that goes with them.

The format is Label Studio's JSON task format for image pre-annotations ("Import pre-annotated
data", labelstud.io/guide/predictions): each task is ``{"data": {"image": ...}, "annotations":
[{"result": [...]}], "predictions": [{"model_version", "score", "result": [...]}]}``; each result
is a ``rectanglelabels`` region with ``original_width`` / ``original_height`` (the field's pixels)
and ``value`` = ``x``, ``y``, ``width``, ``height`` in percent of the image (top-left corner),
``rotation`` 0 and ``rectanglelabels`` = [the class]. ``from_name`` / ``to_name`` are
:data:`FROM_NAME` / :data:`TO_NAME`, the names in :func:`labeling_config`; ``data.image`` is the
key ``$image`` of that config.

* predictions: every cell the model found (deleted ones too: the model did find them), labelled
  with the model's class; each region's ``score`` is the detector's score, the prediction's
  ``score`` their mean (Label Studio sorts tasks by it); ``model_version`` names the classifier
  (else the detector);
* annotations (signed cases only: the signature says every cell was reviewed): the cells kept
  (not deleted), added ones included, labelled with the final class (the reviewer's, else the
  model's that the reviewer let stand);
* labels: the case's classes and Other (:func:`~.queries.class_choices`, as on the review page);
  all cases exported together must have the same classes;
* ``data.image``: the image's path in the store, or ``image_root`` + its path relative to the
  store (``<sha[:2]>/<sha><suffix>``: point Label Studio's local storage or a web server at the
  store's folder); ``data`` also names the case, its version and the field (provenance);
* region ids: ``p<cell id>`` in predictions, ``a<cell id>`` in annotations (unique in a task, as
  Label Studio asks).

Cases: the named ones (every case when none is named), each's latest version; with
``signed_only`` each's latest *signed* version, and cases never signed are left out (and said).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence
from xml.sax.saxutils import quoteattr

from sqlalchemy.orm import Session

from bmc_detectron.cases.errors import ExportError
from bmc_detectron.cases.export import latest_signed
from bmc_detectron.cases.models import Case, Cell, Field
from bmc_detectron.cases.queries import class_choices, find_cases, get_case
from bmc_detectron.cases.store import ImageStore

#: the names of the labelling config's RectangleLabels (``from_name``) and Image (``to_name``)
FROM_NAME = "label"
TO_NAME = "image"


@dataclass
class LabelStudioExport:
    """What :func:`export_labelstudio` made: the tasks, the labels of the config, the cases
    exported (``case id`` -> version) and those left out (``case id`` -> why)."""

    tasks: List[Dict[str, Any]]
    labels: List[str]
    exported: Dict[str, int] = field(default_factory=dict)
    left_out: Dict[str, str] = field(default_factory=dict)


def summary_lines(out: LabelStudioExport, output: str, config: str) -> List[str]:
    """What ``bmc cases export-labelstudio`` prints about ``out`` written to ``output`` and
    ``config``: the tasks, how many carry reviewed boxes, and each case left out and why."""
    signed = sum("annotations" in t for t in out.tasks)
    head = (
        f"wrote {output}: {len(out.tasks)} task(s) from {len(out.exported)} case(s) "
        f"({signed} with the reviewed boxes); labelling config {config}"
    )
    return [head] + [f"left out {case_id}: {why}" for case_id, why in out.left_out.items()]


def box_to_percent(box: Sequence[float], width: int, height: int) -> Dict[str, float]:
    """A box ``(x0, y0, x1, y1)`` in pixels as Label Studio's ``x, y, width, height`` in percent
    of a ``width`` x ``height`` image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return {
        "x": x0 * 100.0 / width,
        "y": y0 * 100.0 / height,
        "width": (x1 - x0) * 100.0 / width,
        "height": (y1 - y0) * 100.0 / height,
    }


def percent_to_box(value: Dict[str, float], width: int, height: int) -> List[float]:
    """The inverse of :func:`box_to_percent`: a result's ``value`` back to ``[x0, y0, x1, y1]``
    pixels of a ``width`` x ``height`` image."""
    x0 = value["x"] * width / 100.0
    y0 = value["y"] * height / 100.0
    return [x0, y0, x0 + value["width"] * width / 100.0, y0 + value["height"] * height / 100.0]


def labeling_config(labels: Sequence[str]) -> str:
    """The Label Studio labelling config (XML) the tasks are written for."""
    lines = ["<View>", f'  <Image name="{TO_NAME}" value="${TO_NAME}" zoom="true"/>']
    lines.append(f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">')
    lines += [f"    <Label value={quoteattr(name)}/>" for name in labels]
    lines += ["  </RectangleLabels>", "</View>", ""]
    return "\n".join(lines)


def _region(prefix: str, cell: Cell, label: str, fld: Field) -> Dict[str, Any]:
    value = box_to_percent(cell.box, fld.width, fld.height)
    value.update(rotation=0, rectanglelabels=[label])
    return {
        "id": f"{prefix}{cell.id}",
        "type": "rectanglelabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": fld.width,
        "original_height": fld.height,
        "image_rotation": 0,
        "value": value,
    }


def _task(case: Case, fld: Field, store: ImageStore, image_root: Optional[str]) -> Dict[str, Any]:
    path = store.path(fld.image_sha256, fld.image_suffix)
    if not path.is_file():
        raise ExportError(
            f"case {case.case_id!r} field {fld.name!r}: image missing from the store {store.root}"
        )
    if image_root is None:
        image = str(path.resolve())
    else:
        sep = "" if image_root.endswith(("/", "=")) else "/"
        image = image_root + sep + store.relpath(fld.image_sha256, fld.image_suffix)
    data = {TO_NAME: image, "case": case.case_id, "version": case.version, "field": fld.name}
    found = [c for c in fld.cells if not c.added]
    results = []
    for cell in found:
        results.append(_region("p", cell, cell.model_class or "", fld))
        if cell.det_score is not None:
            results[-1]["score"] = cell.det_score
    scores = [c.det_score for c in found if c.det_score is not None]
    prediction: Dict[str, Any] = {"model_version": case.classifier or case.detector}
    prediction["score"] = sum(scores) / len(scores) if scores else 0.0
    prediction["result"] = results
    task: Dict[str, Any] = {"data": data}
    if case.status == "signed":
        kept = [_region("a", c, c.final_class or "", fld) for c in fld.cells if not c.deleted]
        task["annotations"] = [{"result": kept}]
    task["predictions"] = [prediction]
    return task


def _check_labels(cases: Sequence[Case]) -> List[str]:
    labels = list(class_choices(cases[0]))
    for case in cases[1:]:
        if list(class_choices(case)) != labels:
            raise ExportError(
                f"case {case.case_id!r} has classes {list(class_choices(case))}, case "
                f"{cases[0].case_id!r} has {labels}: export them separately"
            )
    for case in cases:
        for fld in case.fields:
            for cell in fld.cells:
                for name in {cell.model_class, cell.final_class} - {None}:
                    if name not in labels:
                        raise ExportError(
                            f"case {case.case_id!r} field {fld.name!r} cell {cell.id}: class "
                            f"{name!r} is not one of the case's classes {labels}"
                        )
    return labels


def export_labelstudio(
    session: Session,
    store: ImageStore,
    case_ids: Sequence[str] = (),
    signed_only: bool = False,
    image_root: Optional[str] = None,
    lab: Optional[str] = None,
) -> LabelStudioExport:
    """The chosen cases (none: every case of ``lab``) as Label Studio tasks, one per field (see
    the module doc); ``lab``: that lab's cases only (None: every lab; a named case of another
    lab is refused, :class:`~.errors.ForbiddenError`, as :mod:`.labs` refuses it). An unknown
    case is refused (:class:`~.errors.NotFoundError`), and so is an export with no case left."""
    every = sorted({c.case_id for c in find_cases(session, lab=lab)})
    names = list(dict.fromkeys(case_ids)) or every
    cases: List[Case] = []
    left_out: Dict[str, str] = {}
    for name in names:
        case = get_case(session, name, lab=lab)  # NotFoundError for an unknown case
        if signed_only:
            signed = latest_signed(session, name, lab)
            if signed is None:
                left_out[name] = f"never signed (latest version {case.version} is {case.status})"
                continue
            case = signed
        cases.append(case)
    if not cases:
        nothing = "the database has no case" + ("" if lab is None else f" of lab {lab!r}")
        why = "; ".join(f"{k}: {v}" for k, v in left_out.items()) or nothing
        raise ExportError(f"no case to export ({why})")
    labels = _check_labels(cases)
    tasks = [_task(case, fld, store, image_root) for case in cases for fld in case.fields]
    exported = {c.case_id: c.version for c in cases}
    return LabelStudioExport(tasks, labels, exported, left_out)
