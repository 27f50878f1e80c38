"""The web page's analyze response carries the count's scale warnings, with their codes: a field
seen by the detector far from its training size, and a field whose stain shows cells where none
are found (the page lists ``scale.warnings``); and the scale the count would find, which the page's
scale line shows (``scale.js`` run in node, no browser)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.count_warnings import DETECTOR_SCALE, FEW_CELLS_FOUND
from bmc_detectron.pipeline.model_scale import ModelScale
from bmc_detectron.pipeline.scale_plan import ScaleOptions, ScaleSetup, make_setup
from bmc_detectron.smear.ruler import rescaled
from tests.pipeline.helpers import (
    MODEL_MPP,
    TRAINED_PX,
    DiscDetector,
    SelectiveDetector,
    disc_field,
    disc_fields,
    probe_profile,
)
from tests.serve.helpers import encode

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("python_multipart", reason="pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.serve import ServeSettings, create_app  # noqa: E402

SCALE_JS = Path(__file__).resolve().parents[2] / "bmc_detectron" / "serve" / "static" / "scale.js"


class BlindResizingDetector(DiscDetector):
    """Finds nothing; tests at 64 px, trained at 128 px (as its attributes say)."""

    min_size, max_size, train_min_size, train_max_size = 64, 1000, (128,), 1000

    def __call__(self, image):
        return Detections.empty()


def test_the_page_gets_the_scale_and_few_cells_warnings():
    counter = CellCounter(BlindResizingDetector(), tile_size=0)
    scale = ScaleSetup(
        ScaleOptions(detector_scale_tolerance=1.5), ModelScale(image_size=(128, 128), source="t")
    )
    settings = ServeSettings(allowed_hosts=("testserver",))
    image, _ = disc_field(256, 256, [(60, 60, 20, "A"), (180, 170, 24, "B")])
    with TestClient(create_app(counter, settings=settings, scale=scale)) as client:
        files = [("files", ("f.png", encode(image[:, :, ::-1]), "image/png"))]
        response = client.post("/api/v1/analyze", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    scale_entry = body["scale"]
    codes = [w["code"] for w in scale_entry["warning_codes"]]
    assert codes == [DETECTOR_SCALE, FEW_CELLS_FOUND]
    assert scale_entry["warnings"] == [w["message"] for w in scale_entry["warning_codes"]]
    assert "0.25x their training size" in scale_entry["warnings"][0]
    assert scale_entry["detector_input"]["off"] == ["f"]
    assert body["fields"][0]["nucleus_fraction"] > 0.01


def _page_words(scale: dict) -> str:
    """What the page's scale line says of an analyze answer's ``scale`` (scale.js in node)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's words are not checked")
    script = (
        "global.window = global; require(process.argv[1]);"
        "console.log(window.BMCScale.caseLine([{scale: JSON.parse(process.argv[2])}]));"
    )
    out = subprocess.run(
        [node, "-e", script, str(SCALE_JS), json.dumps(scale)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_the_page_finds_and_shows_the_scale_the_count_would(tmp_path):
    """Uploads of disc fields 1.6x the training size: with ``auto_scale`` the page's answer has
    the count's probe scale, source and confidence, and the page's scale line says so; a given
    pixel size wins; without either the fields are analysed as they are."""
    profile = probe_profile()
    setup = make_setup(ScaleOptions(), profile, "p.json")
    counter = CellCounter(SelectiveDetector(), score_threshold=0.3, tile_size=0)
    settings = ServeSettings(allowed_hosts=("testserver",))
    images = [rescaled(f, 1.6)[0] for f in disc_fields([TRAINED_PX], n=2, size=240)]
    files = [
        ("files", (f"f{i}.png", encode(im[:, :, ::-1]), "image/png")) for i, im in enumerate(images)
    ]
    with TestClient(create_app(counter, settings=settings, scale=setup)) as client:
        found = client.post("/api/v1/analyze", files=files, data={"auto_scale": "true"}).json()
        given = client.post(
            "/api/v1/analyze", files=files, data={"auto_scale": "1", "microns_per_pixel": "0.1"}
        ).json()
        plain = client.post("/api/v1/analyze", files=files).json()
    scale = found["scale"]
    assert scale["source"] == "probe" and scale["settled"] and scale["confidence"] > 0.5
    assert abs(scale["to_training_scale"] * 1.6 - 1) < 0.1
    assert scale["microns_per_pixel"] == pytest.approx(MODEL_MPP / 1.6, rel=0.1)
    assert all(len(f["cells"]) > 0 for f in found["fields"])
    words = _page_words(scale)
    assert "found by the detector probe (confidence" in words and "resized ×0.6" in words
    assert given["scale"]["source"] == "given" and given["scale"]["to_training_scale"] == 0.5
    assert "0.1 µm/px given" in _page_words(given["scale"])
    assert plain["scale"]["source"] == "none" and not plain["scale"]["asked"]
    assert all(f["cells"] == [] for f in plain["fields"])  # discs too big for the stand-in
    assert "own size" in _page_words(plain["scale"])
