"""Large fields as overlapping tiles, and one cell per cell when the tiles' detections are merged.

A field with a side longer than the tile size is cut into tiles of that size that overlap by
``overlap`` pixels (the last tile of a row or column is flush with the image edge). Each tile is
detected alone; its boxes are shifted back to image pixels. A cell near a tile border is then seen
by two (or, at a corner, four) tiles: complete in one, cut by the tile edge in the other, or
complete in both when it lies inside the overlap. The merge keeps exactly one box per cell:

1. A box is *cut* when it lies within ``edge_margin`` pixels of an edge of its tile that is not an
   edge of the image.
2. A cut box is dropped when it lies inside (by at least ``cover`` of its area) a complete box of
   another tile, both clipped to the region the two tiles share: the cut piece of a cell that
   another tile saw whole. (The box of a piece of a round cell is shorter than the cell's box, so
   the test is containment, not IoU.)
3. Cut boxes left over are pieces of cells larger than the overlap, cut in every tile: pieces of
   different tiles whose clipped boxes have IoU >= ``join_iou`` are joined into their union box.
4. Complete boxes are kept; a cell lying inside the overlap is complete in both tiles and the
   final class-agnostic NMS keeps one of the two (their IoU is about 1). The same NMS leaves one
   box per cell when a multi-class detector gave one cell two classes.

Any cell no wider than ``overlap - 2 * edge_margin`` is complete in at least one tile, so its
complete box is what is counted; a cut piece is only counted when no tile saw the cell whole.
The detector's score threshold is applied before the merge, so a low-scoring complete box never
replaces a piece that passed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import nms

from bmc_detectron.pipeline.detector import Detections
from bmc_detectron.structures.boxes import clipped_area, iou_from_areas, overlap_box, safe_ratio


@dataclass(frozen=True)
class Tile:
    """A tile's pixel rectangle [x0, x1) x [y0, y1) in the field."""

    x0: int
    y0: int
    x1: int
    y1: int


def tile_starts(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles of ``size`` covering ``length`` with at least ``overlap`` shared."""
    if size <= 0 or length <= size:
        return [0]
    if not 0 <= overlap < size:
        raise ValueError(f"tile overlap {overlap} must be >= 0 and smaller than the tile {size}")
    stride = size - overlap
    return list(range(0, length - size, stride)) + [length - size]


def tile_grid(height: int, width: int, tile_size: int, overlap: int) -> List[Tile]:
    """Tiles covering a ``height x width`` field; one tile (the field) when it is not larger."""
    if tile_size <= 0 or max(height, width) <= tile_size:
        return [Tile(0, 0, width, height)]
    tw, th = min(tile_size, width), min(tile_size, height)
    return [
        Tile(x, y, x + tw, y + th)
        for y in tile_starts(height, tile_size, overlap)
        for x in tile_starts(width, tile_size, overlap)
    ]


def window_overlap(
    boxes_a: np.ndarray, tiles_a: np.ndarray, boxes_b: np.ndarray, tiles_b: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection and both areas of box pairs clipped to their tiles' shared region."""
    window = overlap_box(tiles_a, tiles_b)
    a, b = overlap_box(boxes_a, window), overlap_box(boxes_b, window)
    return clipped_area(overlap_box(a, b)), clipped_area(a), clipped_area(b)


def cut_by_tile_edge(
    boxes: np.ndarray, tiles: np.ndarray, height: int, width: int, margin: float
) -> np.ndarray:
    """(N,) True where a box lies within ``margin`` of an edge of its tile inside the image."""
    inner_lo = tiles[:, :2] > 0
    inner_hi = tiles[:, 2:] < np.array([width, height])
    near_lo = boxes[:, :2] <= tiles[:, :2] + margin
    near_hi = boxes[:, 2:] >= tiles[:, 2:] - margin
    return ((inner_lo & near_lo) | (inner_hi & near_hi)).any(axis=1)


def _groups(n: int, pairs: Sequence[Tuple[int, int]]) -> List[List[int]]:
    """Connected components (union-find) of ``n`` items linked by ``pairs``."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    groups: dict = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _pair_scores(
    kind: str, rows: np.ndarray, cols: np.ndarray, boxes: np.ndarray, tiles: np.ndarray
) -> np.ndarray:
    """(len(rows), len(cols)) "cover" (share of the row box inside the column box) or "iou"."""
    inter, area_r, area_c = window_overlap(
        boxes[rows, None], tiles[rows, None], boxes[None, cols], tiles[None, cols]
    )
    if kind == "cover":
        return safe_ratio(inter, area_r, 1e-9)
    return iou_from_areas(inter, area_r, area_c, 1e-9)


def _matches(
    kind: str, rows: np.ndarray, cols: np.ndarray, boxes, tiles, tile_ids, threshold: float
) -> List[Tuple[int, int]]:
    """Pairs (row, col) of boxes of different tiles scoring at least ``threshold`` (chunked)."""
    pairs: List[Tuple[int, int]] = []
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        score = _pair_scores(kind, chunk, cols, boxes, tiles)
        other = tile_ids[chunk, None] != tile_ids[None, cols]
        for r, c in zip(*np.nonzero((score >= threshold) & other)):
            pairs.append((int(chunk[r]), int(cols[c])))
    return pairs


def merge_tiles(
    parts: Sequence[Tuple[Tile, Detections]],
    height: int,
    width: int,
    *,
    edge_margin: float = 8.0,
    cover: float = 0.7,
    join_iou: float = 0.5,
) -> Detections:
    """One detection per cell from per-tile detections (boxes in tile pixels); see module doc."""
    boxes, keep = merge_tile_indices(
        parts, height, width, edge_margin=edge_margin, cover=cover, join_iou=join_iou
    )
    if len(keep) == 0:
        return Detections.empty()
    scores = np.concatenate([d.scores for _, d in parts if len(d)])
    classes = np.concatenate([d.classes for _, d in parts if len(d)])
    return Detections(boxes, scores[keep], classes[keep])


def merge_tile_indices(
    parts: Sequence[Tuple[Tile, Detections]],
    height: int,
    width: int,
    *,
    edge_margin: float = 8.0,
    cover: float = 0.7,
    join_iou: float = 0.5,
) -> Tuple[np.ndarray, np.ndarray]:
    """The merge of :func:`merge_tiles` as (K, 4) boxes in field pixels and, for each, the index
    of the detection it stands for among all the parts' detections in order (a joined cell: its
    best-scoring piece; its box is the pieces' union). For a caller that keeps more per
    detection than a box (the slide count keeps its recognised cells)."""
    parts = [(t, d) for t, d in parts if len(d)]
    if not parts:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes = np.concatenate([d.boxes + np.float32([t.x0, t.y0, t.x0, t.y0]) for t, d in parts])
    scores = np.concatenate([d.scores for _, d in parts])
    tiles = np.concatenate([np.tile([t.x0, t.y0, t.x1, t.y1], (len(d), 1)) for t, d in parts])
    tiles = tiles.astype(np.float32)
    tile_ids = np.concatenate([np.full(len(d), i) for i, (_, d) in enumerate(parts)])
    cut = cut_by_tile_edge(boxes, tiles, height, width, edge_margin)
    whole, pieces = np.flatnonzero(~cut), np.flatnonzero(cut)
    covered = {i for i, _ in _matches("cover", pieces, whole, boxes, tiles, tile_ids, cover)}
    rest = np.array([i for i in pieces if i not in covered], dtype=np.int64)
    joins = _matches("iou", rest, rest, boxes, tiles, tile_ids, join_iou)
    index = {int(i): k for k, i in enumerate(rest)}
    keep_boxes, keep = [boxes[whole]], list(whole)
    for group in _groups(len(rest), [(index[i], index[j]) for i, j in joins]):
        members = rest[group]
        best = members[np.argmax(scores[members])]
        union = np.concatenate([boxes[members, :2].min(0), boxes[members, 2:].max(0)])
        keep_boxes.append(union[None])
        keep.append(best)
    return np.concatenate(keep_boxes), np.asarray(keep, dtype=np.int64)


def detect_tiled(
    detect: Callable[[np.ndarray], Detections],
    image: np.ndarray,
    tile_size: int,
    overlap: int,
    *,
    edge_margin: float = 8.0,
    nms_threshold: float = 0.5,
) -> Tuple[Detections, int]:
    """One box per cell of ``image`` (in its pixels) and the number of tiles it was detected in.

    ``detect`` runs on the whole image or on each tile; the tiles' boxes are merged
    (:func:`merge_tiles`), then class-agnostic NMS leaves one box per cell.
    """
    height, width = image.shape[:2]
    tiles = tile_grid(height, width, tile_size, overlap)
    if len(tiles) == 1:
        dets = detect(image)
    else:
        parts = [(t, detect(np.ascontiguousarray(image[t.y0 : t.y1, t.x0 : t.x1]))) for t in tiles]
        dets = merge_tiles(parts, height, width, edge_margin=edge_margin)
    return class_agnostic_nms(dets, nms_threshold), len(tiles)


def class_agnostic_nms(dets: Detections, iou_threshold: float) -> Detections:
    """Detections kept by NMS over all classes together (highest score first)."""
    if len(dets) == 0:
        return dets
    keep = nms(torch.from_numpy(dets.boxes), torch.from_numpy(dets.scores), iou_threshold)
    return dets.select(keep.numpy())
