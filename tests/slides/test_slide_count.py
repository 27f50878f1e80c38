"""The slide count on a synthetic smear slide (tests/slides/helpers.py): the counted zone is the
monolayer one, each cell of the counted fields is counted once (exactly: a stand-in detector
finds the known nucleated cells), the count stops at the target, resumes, and the command runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("tifffile", reason="the [wsi] extra is not installed")

from bmc_detectron.pipeline import CellCounter
from bmc_detectron.pipeline.model_scale import ModelScale
from bmc_detectron.pipeline.report import FieldRecord
from bmc_detectron.pipeline.run_io import OutputExistsError
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from bmc_detectron.pipeline.slide_run import in_differential, merge_fields, run_slide_count
from bmc_detectron.pipeline.tiling import Tile
from bmc_detectron.slides.reader import open_slide
from bmc_detectron.slides.source import SlideSource
from bmc_detectron.tools import count as count_tool
from tests.slides.helpers import PURPLE, ZONE, NucleusDetector, smear_slide, write_slide

FIELD, OVERLAP = 256, 64


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    image, boxes = smear_slide()
    return write_slide(tmp_path_factory.mktemp("slide") / "smear.tif", image), boxes, image


def _count(path, output, target, detector=None, **kwargs):
    counter = CellCounter(detector or NucleusDetector(), tile_size=0, tile_overlap=OVERLAP)
    with open_slide(path) as slide:
        return run_slide_count(
            counter,
            SlideSource(slide, 0),
            output,
            target_cells=target,
            field_size=FIELD,
            progress=False,
            **kwargs,
        )


def _slide_boxes(output):
    with open(output / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    return sorted(
        tuple(float(r[k]) for k in ("slide_x0", "slide_y0", "slide_x1", "slide_y1")) for r in rows
    )


def _seen(image, box, x0, x1):
    """The box of the part of a known cell inside [x0, x1) (its purple pixels)."""
    a, b = int(max(box[0], x0)), int(min(box[2], x1))
    ys, xs = np.nonzero((image[int(box[1]) : int(box[3]), a:b] == PURPLE).all(axis=2))
    return (a + xs.min(), box[1] + ys.min(), a + xs.max() + 1, box[1] + ys.max() + 1)


def _union(fields):
    x0 = min(f["x"] for f in fields)
    return x0, max(f["x"] for f in fields) + FIELD


def test_counts_the_monolayer_zone_each_cell_once(slide, tmp_path):
    path, truth, image = slide
    summary = _count(path, tmp_path / "all", target=10_000)
    info = summary["slide"]
    assert info["zone"]["count"] == 12 and info["fields_counted"] == 12  # the whole zone
    assert not info["reached"] and "target_not_reached" in [
        w["code"] for w in summary["warning_codes"]
    ]
    fields = [
        json.loads((tmp_path / "all" / "cells" / f"{f['name']}.json").read_text())["slide"]
        for f in summary["fields"]
    ]
    assert all(ZONE <= f["x"] and f["x"] + FIELD <= 2 * ZONE for f in fields)  # monolayer only
    # every known cell that the counted fields touch, once: whole, or cut by the zone's edge
    x0, x1 = _union(fields)
    inside = truth[(truth[:, 2] > x0) & (truth[:, 0] < x1)]
    expected = sorted(tuple(map(float, _seen(image, b, x0, x1))) for b in inside.tolist())
    assert summary["counted"] == len(expected) > 150
    assert _slide_boxes(tmp_path / "all") == expected
    assert (tmp_path / "all" / "overview.png").is_file()
    assert "slide overview" in (tmp_path / "all" / "report.html").read_text()


def test_stops_once_the_target_is_reached_best_fields_first(slide, tmp_path):
    path = slide[0]
    summary = _count(path, tmp_path / "some", target=60)
    n = summary["slide"]["fields_counted"]
    assert summary["counted"] >= 60 and summary["slide"]["reached"] and 1 < n < 12
    # one field fewer would not have reached it
    records = [
        FieldRecord.from_json(
            json.loads((tmp_path / "some" / "cells" / f"{f['name']}.json").read_text())
        )
        for f in summary["fields"]
    ]
    tiles = [
        Tile(
            int(r.slide["x"]),
            int(r.slide["y"]),
            int(r.slide["x"]) + FIELD,
            int(r.slide["y"]) + FIELD,
        )
        for r in records
    ]
    counter = CellCounter(NucleusDetector(), tile_size=0, tile_overlap=OVERLAP)
    fewer = merge_fields(list(zip(tiles, records))[:-1], 768, 3 * ZONE, counter)
    assert in_differential(fewer, 0.5) < 60


def test_resumes_without_detecting_again(slide, tmp_path):
    path = slide[0]
    out = tmp_path / "resume"
    first = _count(path, out, target=60)
    with pytest.raises(OutputExistsError):
        _count(path, out, target=60)
    (out / "summary.json").unlink()  # an interrupted run
    detector = NucleusDetector()
    again = _count(path, out, target=60, detector=detector)
    assert (
        detector.calls == []
        and again["timing"]["fields_reused"] == again["slide"]["fields_counted"]
    )
    assert again["classes"] == first["classes"] and again["counted"] == first["counted"]
    more = _count(path, out, target=120, detector=detector, overwrite=True)
    assert (
        more["counted"] >= 120
        and len(detector.calls)
        == more["slide"]["fields_counted"] - first["slide"]["fields_counted"]
    )


def test_count_command_with_a_slide(slide, tmp_path, monkeypatch, capsys):
    path = slide[0]
    monkeypatch.setattr(
        count_tool,
        "build_counter",
        lambda spec: CellCounter(NucleusDetector(), tile_size=0, tile_overlap=OVERLAP),
    )
    monkeypatch.setattr(count_tool, "scale_setup", lambda *a, **k: ScaleSetup())
    args = [
        "--detector-onnx",
        "x.onnx",
        "--slide",
        str(path),
        "--output",
        str(tmp_path / "r"),
        "--target-cells",
        "40",
        "--field-size",
        "256",
        "--no-progress",
    ]
    assert count_tool.main(args) == 0
    assert "cells counted" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["counted"] >= 40 and summary["slide"]["level"] == 0
    assert (
        count_tool.main(
            [
                "--detector-onnx",
                "x.onnx",
                "--slide",
                str(tmp_path / "no.svs"),
                "--output",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )
    assert "no.svs: no such slide file" in capsys.readouterr().err
    # the automatic scale is the default for fields; a slide uses its own pixel size, and an
    # explicit --auto-scale with --slide is refused
    explicit = ["--detector-onnx", "x.onnx", "--slide", str(path), "--auto-scale"]
    assert count_tool.main([*explicit, "--output", str(tmp_path / "r3")]) == 2
    assert "--auto-scale does not apply to a slide" in capsys.readouterr().err


def test_fields_are_brought_to_the_model_scale(slide, tmp_path):
    path = slide[0]
    _count(path, tmp_path / "exact", target=10_000)
    model = ModelScale(microns_per_pixel=0.5, source="test")  # the slide is 0.25 um/px
    halved = _count(path, tmp_path / "half", target=10_000, scale=ScaleSetup(model=model))
    assert halved["scale"]["factor"] == 0.5 and halved["scale"]["source"] == "given"
    assert halved["slide"]["level"] == 0 and not any(
        w["code"] == "slide_scale_unknown" for w in halved["warning_codes"]
    )
    # the same cells, found at half size and mapped back to the slide (slivers cut by the zone's
    # edge, 1-8 px wide, aside)
    whole = [[b for b in _slide_boxes(tmp_path / d) if b[2] < 1400] for d in ("exact", "half")]
    assert len(whole[0]) == len(whole[1]) > 150
    a, b = (np.array(w) for w in whole)
    error = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2)  # box pairs, px
    nearest = error.argmin(axis=1)
    assert error.min(axis=1).max() <= 2.0 and len(set(nearest.tolist())) == len(a)


class ResizingNucleusDetector(NucleusDetector):
    """The stand-in with a detector's own test resize (shortest side to 512 px)."""

    min_size, max_size = 512, 1333


def test_warns_when_the_detector_sees_cells_far_from_their_training_size(slide, tmp_path):
    from bmc_detectron.pipeline.detector_view import ScaleMismatchError
    from bmc_detectron.pipeline.scale_plan import ScaleOptions

    # no pixel size for the model: 256 px fields resized to 512 by the detector, training images
    # of 512 px seen as they are: cells at 2x their training size
    model = ModelScale(image_size=(512, 512), source="test")
    summary = _count(
        slide[0], tmp_path / "off", target=50, detector=ResizingNucleusDetector(),
        scale=ScaleSetup(model=model),
    )  # fmt: skip
    codes = [w["code"] for w in summary["warning_codes"]]
    assert "detector_scale" in codes
    assert summary["scale"]["detector_input"]["fields"]["slide field"]["relative"] == 2.0
    strict = ScaleSetup(ScaleOptions(strict_scale=True), model=model)
    with pytest.raises(ScaleMismatchError):
        _count(slide[0], tmp_path / "strict", target=50, detector=ResizingNucleusDetector(),
               scale=strict)  # fmt: skip
