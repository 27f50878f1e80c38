"""The web page's analyze response carries the count's scale warnings, with their codes: a field
seen by the detector far from its training size, and a field whose stain shows cells where none
are found (the page lists ``scale.warnings``)."""

from __future__ import annotations

import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.count_warnings import DETECTOR_SCALE, FEW_CELLS_FOUND
from bmc_detectron.pipeline.scale_plan import ModelScale, ScaleOptions, ScaleSetup
from tests.pipeline.helpers import DiscDetector, disc_field
from tests.serve.helpers import encode

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("python_multipart", reason="pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.serve import ServeSettings, create_app  # noqa: E402


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
