"""The web app's JSON API (bmc_detectron.serve) with FastAPI's TestClient on a tiny counter.

Every refusal is checked: no file, not multipart, not an image, empty file, oversize file, too
many files, too many pixels (from the header, before decoding), a truncated image, an oversize
body, a cross-site post, a foreign Host, a busy analyser (503), bad JSON.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.serve.helpers import (
    MIN_SCORE,
    encode,
    png_header_only,
    smear,
    tiny_counter,
    visible_cells,
)

pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
pytest.importorskip("python_multipart", reason="pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from bmc_detectron.data.classes import MARROW_ABBRS  # noqa: E402
from bmc_detectron.pipeline.report import cells_csv  # noqa: E402
from bmc_detectron.serve import ServeSettings, create_app  # noqa: E402
from bmc_detectron.structures.differential import Lineage, differential  # noqa: E402

HOSTS = ("testserver",)


@pytest.fixture(scope="module")
def counter():
    return tiny_counter()


@pytest.fixture(scope="module")
def client(counter):
    settings = ServeSettings(
        max_file_bytes=200_000, max_files=3, max_pixels=400 * 400, allowed_hosts=HOSTS
    )
    app = create_app(counter, settings=settings)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def field_png():
    return encode(smear(120, 160, seed=1))


@pytest.fixture(scope="module")
def analyzed(client, field_png):
    files = [("files", ("a.png", field_png, "image/png"))]
    files.append(("files", ("b.jpg", encode(smear(100, 140, 2), "JPEG", quality=90), "x/y")))
    response = client.post("/api/v1/analyze", files=files, data={"preview": "1"})
    assert response.status_code == 200, response.text
    return response.json()


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["status"] == status and body["code"] == code and body["message"]
    return body


def test_analyze_returns_cells_per_field(analyzed):
    assert [f["filename"] for f in analyzed["fields"]] == ["a.png", "b.jpg"]
    assert analyzed["class_names"] == list(MARROW_ABBRS)
    assert set(analyzed["timing"]) == {"read_s", "queue_s", "analyze_s", "total_s"}
    # no pixel size given, no training profile: fields at their own size, not checked
    scale = analyzed["scale"]
    assert scale["source"] == "none" and scale["factor"] == 1.0 and scale["warnings"] == []
    assert not scale["ood_checked"]
    assert all(f["flags"] == [] and f["rbc_diameter_px"] is None for f in analyzed["fields"])
    first, second = analyzed["fields"]
    assert (first["width"], first["height"], first["format"]) == (160, 120, "PNG")
    assert second["format"] == "JPEG"  # found by decoding; the declared type "x/y" is ignored
    assert first["preview"].startswith("data:image/jpeg;base64,")
    assert len(first["cells"]) > 5, "the test detector should find boxes"
    for cell in first["cells"]:
        x0, y0, x1, y1 = cell["box"]
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120
        assert cell["det_score"] >= MIN_SCORE and cell["label"] in MARROW_ABBRS
        assert len(cell["probs"]) == 11 and math.isclose(sum(cell["probs"]), 1, abs_tol=1e-3)
        assert cell["prob"] == max(cell["probs"])
    scores = [c["det_score"] for c in first["cells"]]
    assert max(scores) - min(scores) > 0.1, "scores should spread for the slider"


def test_analyze_matches_the_counter(client, counter, field_png):
    response = client.post("/api/v1/analyze", files={"files": ("a.png", field_png)})
    cells = response.json()["fields"][0]["cells"]
    assert response.json()["fields"][0]["preview"] is None
    bgr = np.asarray(Image.open(io.BytesIO(field_png)).convert("RGB"))[:, :, ::-1].copy()
    expected = [c.to_json() for c in counter.count_image(bgr)]
    assert cells == expected


def test_model_health_and_docs(client):
    model = client.get("/api/v1/model").json()
    assert model["class_names"] == list(MARROW_ABBRS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c["color"]) for c in model["classes"])
    assert model["classes"][4] == {
        "name": "Red",
        "full_name": "nucleated red cell",
        "color": "#911eb4",
        "lineage": "erythroid",
    }
    assert model["lineage"]["me_applies"] and model["backend"] == "torch"
    assert model["settings"]["max_files"] == 3 and model["settings"]["min_score"] == MIN_SCORE
    assert model["scale"] is None  # the page's pixel size entry is off
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["running"] == 0
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/analyze"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert "microns_per_pixel" in body["multipart/form-data"]["schema"]["properties"]
    for path in ("/api/v1/model", "/api/v1/summary", "/api/v1/cells.csv", "/healthz"):
        assert path in schema["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text and "https://" not in docs.text
    assert client.get("/static-docs/swagger-ui-bundle.js").status_code == 200


def test_page_and_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assets = re.findall(r'(?:src|href)="(/static/[^"?]+)', page.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"app.css", "app.js", "stats.js", "scale.js"}
    assert 'id="pixel-size"' in page.text and '<label for="pixel-size">' in page.text
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert not re.search(r"(?:src|href|url)\(?=?[\"']?https?://", response.text), asset
    assert not re.search(r"(?:src|href)=\"https?://", page.text)


def test_no_file_and_not_multipart(client):
    only_a_field = {"preview": (None, "1")}  # multipart, with no file part
    _error(client.post("/api/v1/analyze", files=only_a_field), 400, "no_files")
    _error(client.post("/api/v1/analyze", json={"files": []}), 415, "not_multipart")


def test_not_an_image(client):
    files = {"files": ("scan.png", b"%PDF-1.4 this is not a png", "image/png")}
    body = _error(client.post("/api/v1/analyze", files=files), 415, "not_an_image")
    assert body["file"] == "scan.png" and body["index"] == 0


def test_empty_file(client, field_png):
    files = [("files", ("ok.png", field_png)), ("files", ("empty.png", b""))]
    body = _error(client.post("/api/v1/analyze", files=files), 400, "empty_file")
    assert body["file"] == "empty.png" and body["index"] == 1


def test_oversize_file(client):
    big = encode((np.random.default_rng(0).random((300, 300, 3)) * 255).astype(np.uint8))
    assert len(big) > 200_000
    body = _error(
        client.post("/api/v1/analyze", files={"files": ("big.png", big)}), 413, "file_too_large"
    )
    assert body["file"] == "big.png"


def test_too_many_files(client, field_png):
    files = [("files", (f"f{i}.png", field_png)) for i in range(4)]
    _error(client.post("/api/v1/analyze", files=files), 413, "too_many_files")


def test_decompression_bomb_refused_from_the_header(client):
    bomb = png_header_only(60000, 60000)  # 3.6 gigapixels in 100 bytes
    assert len(bomb) < 200
    body = _error(
        client.post("/api/v1/analyze", files={"files": ("bomb.png", bomb)}), 413, "too_many_pixels"
    )
    assert body["file"] == "bomb.png"
    # a real image just over the limit (400 x 400 pixels here)
    wide = encode(np.zeros((10, 16001, 3), np.uint8))
    _error(
        client.post("/api/v1/analyze", files={"files": ("wide.png", wide)}), 413, "too_many_pixels"
    )


def test_truncated_image(client):
    jpeg = encode(smear(120, 160, 3), "JPEG", quality=95)
    files = {"files": ("cut.jpg", jpeg[: len(jpeg) // 2])}
    _error(client.post("/api/v1/analyze", files=files), 422, "unreadable_image")


def test_oversize_request_body(client):
    headers = {"content-type": "multipart/form-data; boundary=x", "content-length": str(10**9)}
    response = client.post("/api/v1/analyze", content=b"--x--\r\n", headers=headers)
    _error(response, 413, "request_too_large")


def test_streamed_body_over_the_limit(client, field_png):
    def chunks(count):  # no Content-Length: the body is counted as it arrives
        yield b"--x\r\nContent-Disposition: form-data; name=files; filename=a.png\r\n\r\n"
        for _ in range(count):
            yield b"\0" * 50_000

    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = client.post("/api/v1/analyze", content=chunks(20), headers=headers)
    assert _error(response, 413, "file_too_large")["file"] == "a.png"
    response = client.post("/api/v1/analyze", content=chunks(40), headers=headers)  # 2 MB
    _error(response, 413, "request_too_large")
    headers = {"content-type": "application/json", "content-length": str(17 * 2**20)}
    response = client.post("/api/v1/summary", content=b"{}", headers=headers)
    _error(response, 413, "request_too_large")


def test_cross_site_post_and_foreign_host(client, field_png):
    files = {"files": ("a.png", field_png)}
    headers = {"origin": "http://evil.example"}
    _error(client.post("/api/v1/analyze", files=files, headers=headers), 403, "cross_origin")
    headers = {"origin": "http://testserver"}
    assert client.post("/api/v1/analyze", files=files, headers=headers).status_code == 200
    assert client.get("/healthz", headers={"host": "rebound.example"}).status_code == 400


def test_user_file_names_are_not_paths_and_nothing_is_written(client, field_png, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the app must not write temporary files")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    files = [("files", ("../../etc/passwd.png", field_png)), ("files", ("C:\\x\\a.png", field_png))]
    fields = client.post("/api/v1/analyze", files=files).json()["fields"]
    assert [f["filename"] for f in fields] == ["passwd.png", "a.png"]
    assert [f["name"] for f in fields] == ["passwd", "a"]


def test_busy_analyser_answers_503_and_stays_responsive(counter, field_png):
    release, entered = threading.Event(), threading.Event()

    class Slow:
        def __getattr__(self, name):
            return getattr(counter, name)

        def count_field(self, image):
            entered.set()
            release.wait(30)
            return counter.count_field(image)

    settings = ServeSettings(workers=1, max_waiting=0, allowed_hosts=HOSTS)
    app = create_app(Slow(), model_info={"backend": "stand-in"}, settings=settings)
    files = {"files": ("a.png", field_png)}
    with TestClient(app) as client:
        results = {}
        worker = threading.Thread(
            target=lambda: results.update(first=client.post("/api/v1/analyze", files=files))
        )
        worker.start()
        assert entered.wait(30)
        start = time.perf_counter()
        health = client.get("/healthz").json()  # the event loop is free while the model works
        assert time.perf_counter() - start < 2 and health["running"] == 1
        busy = client.post("/api/v1/analyze", files=files)
        _error(busy, 503, "busy")
        assert busy.headers["retry-after"] == "2"
        release.set()
        worker.join(30)
    assert results["first"].status_code == 200


def test_summary_and_csv_agree_with_pipeline_stats(client, analyzed):
    fields = [{k: v for k, v in f.items() if k != "preview"} for f in analyzed["fields"]]
    cells = [c for f in fields for c in visible_cells(f, 0.3, ["Lym"])]
    request = {"fields": fields, "min_score": 0.3, "excluded_classes": ["Lym"], "case": "BM-1"}
    summary = client.post("/api/v1/summary", json=request).json()
    expected = differential(
        [c["label"] for c in cells], [c["prob"] < 0.5 for c in cells], MARROW_ABBRS, Lineage()
    )
    assert summary["counted"] == expected["counted"] > 0
    assert summary["uncertain"] == expected["uncertain"]
    for got, want in zip(summary["classes"], expected["classes"]):
        assert got["count"] == want["count"]
        if want["count"]:
            assert got["percent"] == round(want["percent"], 2)
            assert got["ci95_percent"] == [round(v, 2) for v in want["ci95_percent"]]
    ratio = expected["me"]["ratio"]
    assert summary["me"]["ratio"] == (None if ratio is None else round(ratio, 2))
    assert summary["warnings"][0].startswith(f"only {expected['counted']} nucleated cells")
    assert summary["settings"]["view"] == {
        "case": "BM-1",
        "min_score": 0.3,
        "excluded_classes": ["Lym"],
    }
    csv_text = client.post("/api/v1/cells.csv", json=request).text
    assert csv_text.splitlines()[0] == cells_csv([], MARROW_ABBRS, 0.5).strip()
    assert len(csv_text.strip().splitlines()) == 1 + len(cells)


def test_summary_lists_other_cells_apart(client, analyzed):
    field = {k: v for k, v in analyzed["fields"][0].items() if k != "preview"}
    cells = [{**c, "det_score": 0.9} for c in field["cells"][:2]]
    cells[1]["label"] = "Other"  # the open-set outcome of a classifier with a threshold
    summary = client.post("/api/v1/summary", json={"fields": [{**field, "cells": cells}]}).json()
    assert (summary["detected"], summary["counted"] + summary["uncertain"]["total"]) == (2, 1)
    assert summary["other"] == 1 and summary["fields"][0]["other"] == 1
    model = client.get("/api/v1/model").json()
    assert model["other_class"]["name"] == "Other" and model["settings"]["open_set"] is None


def test_summary_bad_requests(client, analyzed):
    field = {k: v for k, v in analyzed["fields"][0].items() if k != "preview"}
    bad = {**field, "cells": [{**field["cells"][0], "label": "Nope"}]}
    _error(client.post("/api/v1/summary", json={"fields": [bad]}), 422, "unknown_class")
    _error(client.post("/api/v1/summary", json={"fields": "x"}), 422, "invalid_request")
    _error(
        client.post("/api/v1/summary", content=b"{", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
