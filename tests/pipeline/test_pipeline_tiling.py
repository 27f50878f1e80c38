"""Large fields as tiles: the grid, cut boxes, and one box per cell after the merge."""

from __future__ import annotations

import numpy as np
import pytest

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.tiling import (
    Tile,
    cut_by_tile_edge,
    detect_tiled,
    merge_tiles,
    tile_grid,
    tile_starts,
)
from tests.pipeline.helpers import DiscDetector, disc_field


def _sorted(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return boxes[np.lexsort(boxes.T[::-1])]


def test_tile_grid_covers_the_field_with_the_overlap():
    assert tile_starts(100, 128, 16) == [0]
    assert tile_starts(300, 128, 28) == [0, 100, 172]  # the last tile is flush with the edge
    tiles = tile_grid(250, 300, 128, 28)
    assert len(tiles) == 3 * 2 + 3  # rows at 0, 100, 122 x columns at 0, 100, 172
    covered = np.zeros((250, 300), dtype=bool)
    for t in tiles:
        assert (t.x1 - t.x0, t.y1 - t.y0) == (128, 128)
        covered[t.y0 : t.y1, t.x0 : t.x1] = True
    assert covered.all()
    # a field not larger than the tile is one tile; a long strip is tiled along its long side only
    assert tile_grid(128, 100, 128, 28) == [Tile(0, 0, 100, 128)]
    assert [(t.y0, t.y1) for t in tile_grid(60, 300, 128, 28)] == [(0, 60)] * 3
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(300, 128, 128)


def test_cut_flags_only_inner_tile_edges():
    tiles = np.array([[0, 0, 120, 100], [0, 0, 120, 100], [80, 0, 200, 100]], dtype=np.float32)
    boxes = np.array([[0, 10, 20, 30], [100, 10, 120, 30], [80, 40, 100, 60]], dtype=np.float32)
    # image edge (x=0) is not a cut; the right edge of tile 0 and left edge of tile 1 are
    assert cut_by_tile_edge(boxes, tiles, 100, 200, margin=2.0).tolist() == [False, True, True]


def test_cells_on_tile_borders_are_counted_once():
    # tiles [0, 120) and [80, 200): discs on tile 0's right edge, on tile 1's left edge, inside the
    # overlap (complete in both tiles) and away from it
    discs = [(120, 30, 12, "A"), (80, 70, 12, "A"), (100, 50, 8, "A"), (30, 50, 10, "A")]
    image, truth = disc_field(100, 200, discs)
    detector = DiscDetector()
    dets, n_tiles = detect_tiled(detector, image, 120, 40, edge_margin=2.0)
    assert n_tiles == 2 and len(detector.calls) == 2
    assert len(dets) == len(discs)
    np.testing.assert_array_equal(_sorted(dets.boxes), _sorted(truth))


def test_cell_larger_than_the_overlap_is_joined_from_its_pieces():
    image, truth = disc_field(100, 200, [(120, 50, 45, "A")])  # 91 px wide, overlap 40
    dets, _ = detect_tiled(DiscDetector(), image, 120, 40, edge_margin=2.0)
    assert len(dets) == 1
    np.testing.assert_array_equal(dets.boxes, truth)


def test_mosaic_count_is_exact():
    rng = np.random.default_rng(0)
    discs = []
    for gy in range(7):
        for gx in range(9):
            r = int(rng.integers(6, 13))
            cx = 20 + gx * 36 + int(rng.integers(-3, 4))
            cy = 20 + gy * 36 + int(rng.integers(-3, 4))
            discs.append((cx, cy, r, "ABC"[int(rng.integers(3))]))
    image, truth = disc_field(260, 330, discs)  # 63 discs, up to 25 px wide
    detector = DiscDetector()
    counter = CellCounter(detector, tile_size=96, tile_overlap=36, edge_margin=3.0)
    dets, n_tiles = counter.detect(image)
    assert n_tiles == len(tile_grid(260, 330, 96, 36)) > 9
    assert len(dets) == len(discs)
    np.testing.assert_array_equal(_sorted(dets.boxes), _sorted(truth))
    # without the merge the tiles see many discs more than once
    seen = [len(detector(image[t.y0 : t.y1, t.x0 : t.x1])) for t in tile_grid(260, 330, 96, 36)]
    assert sum(seen) > len(discs)


def test_merge_keeps_the_complete_box_not_the_cut_piece():
    tiles = [Tile(0, 0, 120, 100), Tile(80, 0, 200, 100)]
    piece = Detections([[100, 20, 120, 50]], [0.95], [0])  # cut by tile 0's right edge
    whole = Detections([[20, 20, 55, 50]], [0.6], [0])  # (100..135 in the field) complete in tile 1
    merged = merge_tiles(list(zip(tiles, [piece, whole])), 100, 200, edge_margin=2.0)
    np.testing.assert_array_equal(merged.boxes, [[100, 20, 135, 50]])
    assert merged.scores.tolist() == pytest.approx([0.6])


def test_neighbouring_cells_across_the_overlap_are_not_merged():
    # cells X (70..100) and Y (102..130) side by side in the overlap 80..120 of the two tiles: each
    # tile sees one whole and a piece of the other; the pieces join their own cell only
    tiles = [Tile(0, 0, 120, 100), Tile(80, 0, 200, 100)]
    left = Detections([[70, 20, 100, 50], [102, 20, 120, 50]], [0.9, 0.8], [0, 0])
    right = Detections([[0, 20, 20, 50], [22, 20, 50, 50]], [0.8, 0.9], [0, 0])
    merged = merge_tiles(list(zip(tiles, [left, right])), 100, 200, edge_margin=2.0)
    assert _sorted(merged.boxes).tolist() == [[70, 20, 100, 50], [102, 20, 130, 50]]


@pytest.mark.parametrize(
    "disc",
    [(100, 100, 12), (120, 120, 12), (80, 80, 12), (100, 100, 45)],
    ids=["inside-all-four", "on-corner-of-first", "on-corner-of-last", "larger-than-overlap"],
)
def test_cell_at_a_four_tile_corner_is_counted_once(disc):
    image, truth = disc_field(200, 200, [(*disc, "B")])  # tiles at 0 and 80 on both axes
    dets, n_tiles = detect_tiled(DiscDetector(), image, 120, 40, edge_margin=2.0)
    assert n_tiles == 4
    np.testing.assert_array_equal(dets.boxes, truth)
