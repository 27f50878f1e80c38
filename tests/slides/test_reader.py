"""The slide reader: real SVS files (levels, pixel size, a region, bad input) and a synthetic
pyramidal TIFF written here (levels, resolution, regions equal to the written pixels)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("tifffile", reason="the [wsi] extra is not installed")
import tifffile

from bmc_detectron.slides.reader import SlideError, open_slide
from tests.slides.helpers import LEVELS, MPP, smear_slide, write_slide

CMU = "wsi/CMU-1-Small-Region.svs"
TCGA = "wsi/TCGA-CR-7395-01A-01-TS1.svs"


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    image, _ = smear_slide()
    return write_slide(tmp_path_factory.mktemp("slide") / "smear.tif", image), image


def test_synthetic_pyramid_levels_pixel_size_and_regions(slide_file):
    path, image = slide_file
    with open_slide(path) as slide:
        sizes = [(lv.width, lv.height) for lv in slide.levels]
        assert sizes == [(2304 // k, 768 // k) for k in LEVELS]
        assert [lv.downsample for lv in slide.levels] == list(map(float, LEVELS))
        assert [lv.microns_per_pixel for lv in slide.levels] == [MPP * k for k in LEVELS]
        assert "XResolution" in slide.mpp_source
        # a region across tile borders (tiles of 64) is the written pixels, exactly
        assert np.array_equal(slide.read_region(0, 700, 100, 200, 90), image[100:190, 700:900])
        # beyond the level's edge: glass white
        edge = slide.read_region(0, 2250, 700, 100, 100)
        assert np.array_equal(edge[:68, :54], image[700:, 2250:])
        assert (edge[68:] == 255).all() and (edge[:, 54:] == 255).all()
        assert slide.read_region(1, 10, 5, 30, 20).shape == (20, 30, 3)
        thumb, per_px = slide.thumbnail(512)
        assert max(thumb.shape[:2]) == 512 and per_px == pytest.approx(2304 / 512)
        # the model's 0.25 um/px: level 0; 2.2 um/px: level 1 (8x), never coarser than the model
        assert slide.best_level(0.25) == 0 and slide.best_level(2.2) == 1
        assert slide.best_level(1.0) == 0 and slide.best_level(None) == 0


def test_given_pixel_size_overrides_and_tiff_without_one(tmp_path, slide_file):
    _, image = slide_file
    with open_slide(slide_file[0], microns_per_pixel=0.5) as slide:
        assert slide.levels[1].microns_per_pixel == 4.0 and slide.mpp_source == "given"
    bare = write_slide(tmp_path / "bare.tif", image[:256, :256], mpp=None)
    with open_slide(bare) as slide:
        assert slide.microns_per_pixel is None and slide.best_level(0.25) == 0


def test_aperio_svs_levels_and_mpp(shared_root):
    with open_slide(shared_root / CMU) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [(2220, 2967)]
        assert slide.microns_per_pixel == pytest.approx(0.499)
        assert "Aperio MPP" in slide.mpp_source
        region = slide.read_region(0, 1000, 1200, 300, 200)
        assert region.shape == (200, 300, 3) and region.dtype == np.uint8
        assert region.std() > 5  # tissue, not blank
        with tifffile.TiffFile(shared_root / CMU) as tif:  # the same pixels as tifffile's page
            whole = tif.series[0].levels[0].asarray()
        assert np.array_equal(region, whole[1200:1400, 1000:1300])


def test_jpeg2000_svs_two_levels_without_mpp(shared_root):
    with open_slide(shared_root / TCGA) as slide:
        sizes = [(lv.width, lv.height) for lv in slide.levels]
        assert sizes == [(4443, 3567), (2221, 1783)]
        assert slide.microns_per_pixel is None and slide.levels[1].microns_per_pixel is None
        assert slide.levels[1].downsample == pytest.approx(2.0, rel=1e-3)
        assert slide.read_region(1, 500, 400, 128, 96).shape == (96, 128, 3)


@pytest.mark.skipif(importlib.util.find_spec("tiffslide") is None, reason="tiffslide not installed")
def test_tiffslide_backend_reads_the_same(shared_root):
    with open_slide(shared_root / CMU) as a, open_slide(shared_root / CMU, "tiffslide") as b:
        assert b.backend == "tiffslide" and b.microns_per_pixel == pytest.approx(0.499)
        assert np.array_equal(
            a.read_region(0, 300, 400, 250, 150), b.read_region(0, 300, 400, 250, 150)
        )


@pytest.mark.skipif(importlib.util.find_spec("openslide") is None, reason="openslide not installed")
def test_openslide_backend_reads_the_same(shared_root):
    with open_slide(shared_root / CMU) as a, open_slide(shared_root / CMU, "openslide") as b:
        assert b.backend == "openslide" and b.microns_per_pixel == pytest.approx(0.499)
        assert [(lv.width, lv.height) for lv in b.levels] == [(2220, 2967)]
        # OpenSlide decodes the JPEG tiles with its own libjpeg: equal up to rounding
        diff = np.abs(
            a.read_region(0, 300, 400, 250, 150).astype(int)
            - b.read_region(0, 300, 400, 250, 150).astype(int)
        )
        assert diff.max() <= 2
    with open_slide(shared_root / TCGA, "openslide") as c:  # JPEG 2000 tiles, two levels
        assert [(lv.width, lv.height) for lv in c.levels] == [(4443, 3567), (2221, 1783)]
        assert c.microns_per_pixel is None
        assert c.read_region(1, 500, 400, 128, 96).shape == (96, 128, 3)
    with pytest.raises(SlideError) as err:
        open_slide(shared_root / "wsi" / "broken.svs", "openslide")
    assert "broken.svs" in str(err.value) and "\n" not in str(err.value)


def test_bad_input_is_one_line_naming_the_file(shared_root, tmp_path):
    with pytest.raises(SlideError) as err:
        open_slide(shared_root / "wsi" / "broken.svs")
    text = str(err.value)
    assert "broken.svs" in text and "not a TIFF file" in text and "\n" not in text
    with pytest.raises(SlideError, match="no such slide file"):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(SlideError, match="no level 3"):
        with open_slide(shared_root / CMU) as slide:
            slide.read_region(3, 0, 0, 10, 10)
