"""The exact scale of generated data (issue 31 s.1): the generator writes it into the COCO
``info["profile"]``, the training profile stores it (not a ruler reading), old profiles load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmc_detectron.data.synthetic import (
    RBC_DIAMETER,
    draw_smear,
    generate_dataset,
    image_rng,
    microns_per_pixel,
)
from bmc_detectron.smear import PROFILE_FILE, TrainingProfile
from bmc_detectron.smear.known_scale import (
    KnownScale,
    generator_profile,
    read_known_scale,
    size_profile,
)
from bmc_detectron.smear.profile import known_scale_of, profile_from_dataset, profile_from_records

SCALE = 0.8


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A tiny generated bmc_synth split (3 images, 96 px, scale 0.8), registered."""
    from bmc_detectron.data.classes import marrow_metadata
    from bmc_detectron.data.datasets import register_coco_dataset, unregister_dataset

    root = tmp_path_factory.mktemp("known")
    json_file = generate_dataset(root, "train", 3, seed=4, height=96, width=96, scale=SCALE)
    register_coco_dataset("known_scale_tiny", json_file, root / "train", marrow_metadata())
    yield json_file
    unregister_dataset("known_scale_tiny")


def test_generated_split_holds_its_exact_scale(split):
    info = json.loads(split.read_text())["info"]
    known = read_known_scale(split)
    assert known == KnownScale.from_info(info)
    assert known.microns_per_pixel == round(7.5 / (16.0 * SCALE), 6) == 0.585938
    assert microns_per_pixel(SCALE) == 7.5 / (np.mean(RBC_DIAMETER) * SCALE)
    assert known.rbc_diameter_px == 16.0 * SCALE
    # the diameters are those of the cells drawn (recomputed field by field)
    cells = []
    for i in range(3):
        field = draw_smear(image_rng(4, "train", i), 96, 96, info["cells_per_image"], SCALE)
        assert 0.93 <= field.zoom <= 1.07
        cells += field.cell_diameters
    n_ann = len(json.loads(split.read_text())["annotations"])
    assert known.cell_diameter_px == size_profile(cells) and known.cell_diameter_px["n"] == n_ann
    assert info["profile"]["field_zoom"] == [0.93, 1.07]


def test_training_profile_stores_the_generator_values(split, tmp_path):
    profile = profile_from_dataset(["known_scale_tiny"], max_images=3)
    known = read_known_scale(split)
    assert profile.microns_per_pixel == known.microns_per_pixel
    assert profile.rbc_diameter_px == known.rbc_diameter_px == 12.8
    assert profile.cell_diameter_px == known.cell_diameter_px
    assert profile.scale_source == {
        "microns_per_pixel": "generator",
        "rbc_diameter_px": "generator",
        "cell_diameter_px": "generator",
    }
    assert profile.rbc_ruler_px is not None and profile.rbc_ruler_px != profile.rbc_diameter_px
    saved = TrainingProfile.load(profile.save(tmp_path / PROFILE_FILE))
    assert saved.to_dict() == profile.to_dict() and saved.rbc_diameter_px == 12.8
    data = json.loads((tmp_path / PROFILE_FILE).read_text())
    assert data["rbc_diameter_px"] == 12.8 and data["rbc_ruler_px"] == profile.rbc_ruler_px


def test_given_pixel_size_wins_and_records_say_ruler_without_generator(split):
    from detectron2.data import DatasetCatalog

    records = DatasetCatalog.get("known_scale_tiny")
    known = read_known_scale(split)
    given = profile_from_records(records, max_images=2, microns_per_pixel=0.3, known=known)
    assert given.microns_per_pixel == 0.3 and given.rbc_diameter_px == 12.8
    assert given.scale_source["microns_per_pixel"] == "given"
    ruler = profile_from_records(records, max_images=2)
    assert ruler.microns_per_pixel is None and ruler.cell_diameter_px is None
    assert ruler.rbc_diameter_px == ruler.rbc_ruler_px
    assert ruler.scale_source == {
        "microns_per_pixel": None,
        "rbc_diameter_px": "ruler",
        "cell_diameter_px": None,
    }


def test_old_profiles_load_as_ruler_readings(split):
    data = profile_from_dataset(["known_scale_tiny"], max_images=2).to_dict()
    for key in ("rbc_ruler_px", "cell_diameter_px", "scale_source"):
        del data[key]  # a profile written before issue 31
    data["rbc_diameter_px"] = data["ood"]["rbc_diameter_px"]
    old = TrainingProfile.from_dict(data)
    assert old.rbc_diameter_px == old.rbc_ruler_px == data["ood"]["rbc_diameter_px"]
    assert old.scale_source == {} and old.cell_diameter_px is None


def test_known_scale_of_several_files(split, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"info": {"profile": generator_profile(0.25, 30.0, [40.0])}}))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"info": {"description": "photographs"}}))
    assert known_scale_of([str(split)]) == read_known_scale(split)
    both = known_scale_of([str(split), str(split)])
    assert both.rbc_diameter_px == 12.8 and both.cell_diameter_px == {}
    assert known_scale_of([str(split), str(other)]) is None  # they disagree
    assert known_scale_of([str(split), str(plain)]) is None  # one is not generated
    assert known_scale_of([None]) is None and read_known_scale(tmp_path / "missing") is None
    bad = {"profile": {"microns_per_pixel": -1, "rbc_diameter_px": 30}}
    assert KnownScale.from_info(bad) is None and KnownScale.from_info(None) is None
    assert generator_profile(0.25, 30.0, [], base_scale=0.456)["base_scale"] == 0.456
