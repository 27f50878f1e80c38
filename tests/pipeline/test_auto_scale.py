"""The count finds its own scale (issue 31, section 2): the evidence (the user's pixel size, the
files' own, the detector probe, the red cells), its precedence, the report of which was used and
how sure, the warning (or refusal) when nothing settles it; through the count's own code path.

The fields are hand-made disc fields drawn at the training size and rescaled by a known factor;
the stand-in detector finds discs only near the size it was "trained" at, so only the right
factor lets the count find them.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bmc_detectron.pipeline import CellCounter
from bmc_detectron.pipeline.auto_scale import ScaleUnsettledError
from bmc_detectron.pipeline.count_warnings import (
    PROBE_RULER_DISAGREE,
    SCALE_DISAGREES,
    SCALE_UNSETTLED,
)
from bmc_detectron.pipeline.pixel_size import pixel_size_of, plausible
from bmc_detectron.pipeline.run import run_count
from bmc_detectron.pipeline.scale_decision import (
    ScaleEvidence,
    case_file_scale,
    decide_scale,
)
from bmc_detectron.pipeline.scale_plan import ScaleOptions, make_setup
from bmc_detectron.pipeline.scale_probe import ScaleProbe
from bmc_detectron.smear.ruler import rescaled
from tests.pipeline.helpers import (
    BACKGROUND,
    MODEL_MPP,
    TRAINED_PX,
    SelectiveDetector,
    disc_fields,
    probe_profile,
)


def _case(folder: Path, enlarged: float, n: int = 3, dpi: float = 0.0) -> int:
    """``n`` disc fields drawn at the training size, enlarged by ``enlarged`` and saved as PNG
    (with a pHYs of ``dpi`` when given); returns the number of discs."""
    folder.mkdir(parents=True)
    discs = 0
    for i, field in enumerate(disc_fields([TRAINED_PX], n=n, size=240)):
        big = rescaled(field, enlarged)[0]
        discs += cv2.connectedComponents((big[:, :, 0] != BACKGROUND).astype(np.uint8))[0] - 1
        buf = io.BytesIO()
        extra = {"dpi": (dpi, dpi)} if dpi else {}
        Image.fromarray(big[:, :, ::-1]).save(buf, "PNG", **extra)
        (folder / f"f{i}.png").write_bytes(buf.getvalue())
    return discs


def _count(tmp_path: Path, options: ScaleOptions, detector=None, **case) -> tuple:
    discs = _case(tmp_path / "case", **case)
    detector = detector or SelectiveDetector()
    setup = make_setup(options, probe_profile(), "p.json")
    inputs = sorted((tmp_path / "case").glob("*.png"))
    counter = CellCounter(detector, score_threshold=0.3, tile_size=0)
    summary = run_count(counter, inputs, tmp_path / "out", progress=False, scale=setup)
    return summary, discs, detector


@pytest.mark.parametrize("enlarged", [0.6, 1.6])
def test_the_probe_recovers_a_known_factor_through_the_count(tmp_path, enlarged):
    summary, discs, _ = _count(tmp_path, ScaleOptions(auto=True), enlarged=enlarged)
    scale = summary["scale"]
    assert scale["source"] == "probe" and scale["settled"], scale["decision"]
    assert abs(scale["to_training_scale"] * enlarged - 1) < 0.1, scale
    assert scale["microns_per_pixel"] == pytest.approx(MODEL_MPP / enlarged, rel=0.1)
    assert scale["evidence"]["probe"]["method"] == "size" and scale["evidence"]["file"] is None
    assert (
        0.5 < scale["confidence"] <= 1 and scale["factor"] == scale["evidence"]["probe"]["factor"]
    )
    assert summary["settings"]["field_prep"]["fixed_scale"]
    # counted at the probe's factor, the stand-in finds every disc (at 1.6x it finds none as is)
    assert summary["detected"] == discs
    assert SCALE_UNSETTLED not in [w["code"] for w in summary["warning_codes"]]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "found by the detector probe" in html and "confidence" in html


def test_microns_per_pixel_wins_over_the_estimate(tmp_path):
    given = ScaleOptions(microns_per_pixel=0.25, auto=True)
    summary, _, detector = _count(tmp_path, given, enlarged=1.6, dpi=25400 / 0.1)
    scale = summary["scale"]
    assert scale["source"] == "given" and scale["microns_per_pixel"] == 0.25
    assert scale["to_training_scale"] == pytest.approx(0.25 / MODEL_MPP)
    assert scale["evidence"] == {"file": None, "probe": None}  # nothing else was asked
    assert scale["settled"] and scale["confidence"] == 1.0
    assert len(detector.inputs) == 3  # one call per field: the count's, no probe


def test_the_files_own_pixel_size_is_used_before_the_probe(tmp_path):
    # 0.125 um/px files: the training's 0.2 um/px cells are 1.6x larger in them
    summary, discs, detector = _count(
        tmp_path, ScaleOptions(auto=True), enlarged=1.6, dpi=25400 / 0.125
    )
    scale = summary["scale"]
    assert scale["source"] == "file" and scale["microns_per_pixel"] == 0.125
    assert scale["to_training_scale"] == pytest.approx(0.625)
    assert scale["evidence"]["file"]["fields_carrying"] == 3 and scale["evidence"]["probe"] is None
    assert "PNG pHYs" in scale["decision"] and summary["detected"] == discs
    assert len(detector.inputs) == 3  # the probe was not needed


def test_an_unsettled_scale_is_counted_at_factor_one_with_a_warning_or_refused(tmp_path):
    blank = SelectiveDetector(low=1e6, high=1e7)  # never finds anything: no evidence
    summary, _, _ = _count(tmp_path, ScaleOptions(auto=True), blank, enlarged=1.6)
    scale = summary["scale"]
    assert scale["source"] == "none" and not scale["settled"] and scale["asked"]
    assert scale["factor"] == 1.0 and scale["confidence"] == 0
    assert "no candidate finds cells" in scale["decision"]
    codes = [w["code"] for w in summary["warning_codes"]]
    assert SCALE_UNSETTLED in codes
    unsettled = summary["warnings"][codes.index(SCALE_UNSETTLED)]
    assert "counted at the model's scale (factor 1" in unsettled
    assert "not settled" in (tmp_path / "out" / "report.html").read_text()
    strict = ScaleOptions(auto=True, strict_scale=True)
    with pytest.raises(ScaleUnsettledError, match="--strict-scale"):
        _count(tmp_path / "strict", strict, blank, enlarged=1.6)


def _encoded(fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 100, 50)).save(buf, fmt, **params)
    return buf.getvalue()


def test_the_files_pixel_size_from_hand_made_tiff_and_png():
    cases = [
        (_encoded("PNG", dpi=(25400 / 0.25, 25400 / 0.25)), 0.25, "PNG pHYs"),
        (_encoded("TIFF", resolution=40000, resolution_unit="cm"), 0.25, "per cm"),
        (_encoded("TIFF", resolution=254000, resolution_unit="inch"), 0.1, "per inch"),
        (
            _encoded("TIFF", tiffinfo={270: "ImageJ=1.53\nunit=micron\n", 282: 8.0, 296: 1}),
            0.125,
            "ImageJ",
        ),
        (_encoded("TIFF", tiffinfo={270: "Aperio Image|MPP = 0.2520|AppMag = 40"}), 0.252, "MPP"),
    ]
    for data, mpp, how in cases:
        found = pixel_size_of(data)
        assert found is not None and found.microns_per_pixel == pytest.approx(mpp), how
        assert how in found.how
    # the software defaults (72 / 96 dpi), none, not square, not an image: no pixel size
    for data in (
        _encoded("PNG", dpi=(72, 72)),
        _encoded("TIFF", resolution=96),
        _encoded("PNG"),
        _encoded("PNG", dpi=(101600, 50800)),
        b"not an image",
    ):
        assert pixel_size_of(data) is None
    assert plausible(0.25) and not plausible(25400 / 72) and not plausible(math.nan)


def test_the_case_pixel_size_needs_every_field_and_agreement():
    from bmc_detectron.pipeline.pixel_size import PixelSize

    a, b = PixelSize(0.25, "t"), PixelSize(0.5, "t")
    assert case_file_scale({"x": None}, 0.15) is None
    assert case_file_scale({"x": a, "y": a}, 0.15).microns_per_pixel == 0.25
    partial = case_file_scale({"x": a, "y": None}, 0.15)
    assert partial.microns_per_pixel is None and "only 1 of 2" in partial.note
    assert "disagree" in case_file_scale({"x": a, "y": b}, 0.15).note


def _probe(factor, settled=True, confidence=0.8):
    return ScaleProbe(factor, settled, confidence, "size", "" if settled else "flat", ())


def test_probe_and_red_cells_disagree_the_probe_wins_and_the_report_says_so():
    decide = dict(given_mpp=None, auto=True, tolerance=0.15, model_mpp=0.2)
    # the detector saw its training images at 0.5: probe factor 0.4 is 0.8 in training pixels
    evidence = ScaleEvidence(probe=_probe(0.4), probe_view=0.5)
    out = decide_scale(**decide, evidence=evidence, ruler_relative=1 / 1.2, ruler_spread=0.05)
    assert out.source == "probe" and out.to_training == pytest.approx(0.8)
    assert out.input_factor == 0.4 and [w.code for w in out.warnings] == [PROBE_RULER_DISAGREE]
    assert out.confidence == 0.8 and "disagree" in out.reason
    agree = decide_scale(**decide, evidence=evidence, ruler_relative=1 / 0.82, ruler_spread=0.0)
    assert agree.source == "probe" and not agree.warnings and agree.confidence == pytest.approx(1)
    # the probe not settled: the red cells that agree with themselves are used
    flat = ScaleEvidence(probe=_probe(0.4, settled=False))
    ruler = decide_scale(**decide, evidence=flat, ruler_relative=0.5, ruler_spread=0.075)
    assert ruler.source == "ruler" and ruler.to_training == 2.0 and ruler.settled
    assert ruler.confidence == pytest.approx(0.75) and "flat" in ruler.reason
    # a given pixel size wins over everything, the red cells' disagreement warned
    given = decide_scale(**{**decide, "given_mpp": 0.1}, evidence=evidence, ruler_relative=1.0)
    assert given.source == "given" and given.to_training == 0.5
    assert [w.code for w in given.warnings] == [SCALE_DISAGREES]


def test_the_summary_keeps_the_probes_evidence(tmp_path):
    summary, _, _ = _count(tmp_path, ScaleOptions(auto=True), enlarged=1.6, n=2)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    probe = saved["scale"]["evidence"]["probe"]
    assert probe["settled"] and probe["training_cell_px"] == TRAINED_PX
    factors = [e["factor"] for e in probe["evidence"]]
    assert factors == sorted(factors) and len(factors) >= 7


def _count_command(tmp_path: Path, monkeypatch, *flags: str) -> tuple:
    """``bmc count`` of 3 disc fields enlarged 1.6x with the stand-in detector (its models
    replaced by it, the training profile by :func:`probe_profile`); the summary, the number of
    discs and the detector."""
    from bmc_detectron.tools import count as count_tool

    discs = _case(tmp_path / "case", enlarged=1.6)
    detector = SelectiveDetector()

    def prepare(spec, output, options, overwrite=False):
        counter = CellCounter(detector, score_threshold=0.3, tile_size=0)
        return counter, make_setup(options, probe_profile(), "p.json")

    monkeypatch.setattr(count_tool, "prepare_count", prepare)
    out = tmp_path / "out"
    args = ["--detector-onnx", "stand-in.onnx", "--input", str(tmp_path / "case")]
    assert count_tool.main([*args, "--output", str(out), "--no-progress", *flags]) == 0
    return json.loads((out / "summary.json").read_text()), discs, detector


def test_the_count_command_finds_the_scale_by_default(tmp_path, monkeypatch, capsys):
    summary, discs, _ = _count_command(tmp_path, monkeypatch)  # no --auto-scale
    scale = summary["scale"]
    assert scale["source"] == "probe" and scale["settled"] and scale["asked"]
    assert abs(scale["to_training_scale"] * 1.6 - 1) < 0.1, scale
    assert summary["detected"] == discs
    assert "found by the detector probe" in capsys.readouterr().out


def test_no_auto_scale_counts_the_fields_as_they_are_without_probing(tmp_path, monkeypatch, capsys):
    summary, _, detector = _count_command(tmp_path, monkeypatch, "--no-auto-scale")
    scale = summary["scale"]
    assert scale["source"] == "none" and not scale["asked"] and scale["factor"] == 1.0
    assert scale["evidence"] == {"file": None, "probe": None}
    assert "automatic scale off" in scale["decision"]
    assert len(detector.inputs) == 3  # one call per field: the count's, no probe
    assert summary["detected"] == 0  # the discs are too big for the stand-in as they are
    assert "not set (automatic scale off)" in capsys.readouterr().out
    html = (tmp_path / "out" / "report.html").read_text()
    assert "not set: each field detected at its own size" in html
