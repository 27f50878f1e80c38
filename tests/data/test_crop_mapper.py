"""The crop mapper decodes a field once for all its cells, within a byte budget."""

from __future__ import annotations

import cv2
import numpy as np

from bmc_detectron.data import crop_mapper
from bmc_detectron.data.crop_mapper import CellCropMapper


def test_crop_records_count_the_cells_of_their_image():
    dicts = [
        {"file_name": "a", "annotations": [{"bbox": [0, 0, 4, 4], "category_id": 0}] * 3},
        {"file_name": "b", "annotations": [{"bbox": [0, 0, 4, 4], "category_id": 1}]},
    ]
    records = crop_mapper.crop_records(dicts, "d", 2)
    assert [r["cells_in_image"] for r in records] == [3, 3, 3, 1]


def test_fields_are_decoded_once_and_evicted_least_recently_used(tmp_path, monkeypatch):
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.png"
        cv2.imwrite(str(path), np.full((32, 32, 3), 40 * i, np.uint8))
        files.append(str(path))
    reads = []
    real_read = crop_mapper.utils.read_image
    monkeypatch.setattr(
        crop_mapper.utils, "read_image", lambda f, format: reads.append(f) or real_read(f, format)
    )
    one = 32 * 32 * 3
    mapper = CellCropMapper(False, crop_size=8, crop_margin=0.0, cache_bytes=2 * one)
    rec = {"box": [4, 4, 20, 20], "label": 1}
    for f in (files[0], files[0], files[1], files[0], files[2], files[1], files[0]):
        out = mapper({**rec, "file_name": f})
        assert out["image"].shape == (3, 8, 8)
    # f0 f1 decoded; f0 reused; f2 evicts f1 (least recent); f1 again evicts f0; f0 again
    assert reads == [files[0], files[1], files[2], files[1], files[0]]
    # an image of one cell is not kept (it is read once per epoch anyway)
    reads.clear()
    for _ in range(2):
        mapper({**rec, "file_name": files[2], "cells_in_image": 1})
    assert reads == [files[2], files[2]]
    # crops of a cached field are not views into it
    out = mapper({**rec, "file_name": files[0]})
    out["image"][:] = 255
    assert int(mapper({**rec, "file_name": files[0]})["image"].max()) == 0
