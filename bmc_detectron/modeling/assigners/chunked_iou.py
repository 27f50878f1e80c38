"""Per-anchor and per-gt IoU maxima without materialising the dense (G, R) IoU matrix.

The anchors are walked in chunks so that each (G, chunk) IoU block holds about
:data:`CHUNK_ELEMENTS` elements: the temporaries stay cache-sized and the time grows linearly in
the number of gts G. Every IoU value is computed by the same elementwise formula as on the dense
matrix (the caller's ``iou_fn``), and maxima are exact, so the results are bitwise those of the
dense computation, ``torch.max(dim=0)`` tie-breaking (lowest gt index) included.

Each gt's max over every *cell* of :data:`CELL_ANCHORS` consecutive anchors is kept (a (G, R /
cell) tensor), so that :func:`anchors_at_gt_max` revisits only the cells where a gt reaches its
global max, and only for those gts.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from bmc_detectron.modeling.assigners.base import paired_iou

#: target number of elements of one (G, chunk) IoU block on CPU: cache-sized temporaries
CHUNK_ELEMENTS = 1 << 18

#: the same on other devices (GPU), where fewer, larger blocks save kernel launches
DEVICE_CHUNK_ELEMENTS = 1 << 21

#: anchors per cell (fewer when a chunk is smaller); a chunk is a whole number of cells
CELL_ANCHORS = 1024

#: ``iou_fn(gt_boxes (G, 4), anchor_boxes (r, 4)) -> (G, r)`` IoU block
IouFn = Callable[[Tensor, Tensor], Tensor]


class ChunkedMaxIoU(NamedTuple):
    """Result of :func:`chunked_max_iou` for G gts and R anchors in N cells."""

    anchor_max: Tensor  # (R,) max IoU of each anchor over the gts
    anchor_argmax: Tensor  # (R,) int64 gt of that max; lowest gt index on ties
    gt_max: Tensor  # (G,) max IoU of each gt over the anchors
    cell_gt_max: Tensor  # (G, N) max IoU of each gt over each cell's anchors
    cell: int  # anchors per cell: cell n is anchors [n * cell, min((n + 1) * cell, R))


def paired_iou_block(gt_boxes: Tensor, anchor_boxes: Tensor) -> Tensor:
    """An :data:`IouFn`: the (G, r) IoU of (G, 4) gts with (r, 4) anchors by
    :func:`~.base.paired_iou`."""
    return paired_iou(gt_boxes[:, None], anchor_boxes[None])


def chunk_sizes(
    num_gt: int, chunk_elements: Optional[int] = None, device_type: str = "cpu"
) -> Tuple[int, int]:
    """(chunk, cell): anchors per IoU block, so that a (num_gt, chunk) block has at most
    ``chunk_elements`` elements (at least one anchor), and anchors per cell
    (:data:`CELL_ANCHORS` or the chunk if smaller); chunk is a multiple of cell. The default
    ``chunk_elements`` is :data:`CHUNK_ELEMENTS` on CPU, :data:`DEVICE_CHUNK_ELEMENTS` elsewhere.
    """
    if chunk_elements is not None:
        budget = chunk_elements
    else:
        budget = CHUNK_ELEMENTS if device_type == "cpu" else DEVICE_CHUNK_ELEMENTS
    size = max(1, budget // max(num_gt, 1))
    cell = min(CELL_ANCHORS, size)
    return size // cell * cell, cell


def _cell_max(block: Tensor, cell: int) -> Tensor:
    """(G, ceil(r / cell)) max of each row of a (G, r) block over consecutive runs of ``cell``."""
    num_gt, width = block.shape
    full = width // cell * cell
    parts = [block[:, :full].reshape(num_gt, -1, cell).amax(dim=2)] if full else []
    if full < width:
        parts.append(block[:, full:].amax(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def chunked_max_iou(
    gt_boxes: Tensor,
    anchor_boxes: Tensor,
    iou_fn: IouFn,
    chunk_elements: Optional[int] = None,
) -> ChunkedMaxIoU:
    """Maxima of the (G, R) IoU matrix along both axes, computed chunk by chunk.

    Args:
        gt_boxes: (G, 4) gt boxes, G >= 1.
        anchor_boxes: (R, 4) anchor boxes.
        iou_fn: computes a (G, r) IoU block from (G, 4) and (r, 4) boxes.
        chunk_elements: IoU elements per block (default: see :func:`chunk_sizes`).

    Returns:
        :class:`ChunkedMaxIoU`; with R = 0, ``gt_max`` is all zeros and there is no cell.
    """
    num_gt, num_anchors = len(gt_boxes), len(anchor_boxes)
    chunk, cell = chunk_sizes(num_gt, chunk_elements, anchor_boxes.device.type)
    if num_anchors == 0:
        empty = anchor_boxes.new_zeros(0)
        zeros = anchor_boxes.new_zeros(num_gt)
        return ChunkedMaxIoU(empty, empty.long(), zeros, zeros[:, None][:, :0], cell)
    vals, idxs, cell_maxes = [], [], []
    for start in range(0, num_anchors, chunk):
        block = iou_fn(gt_boxes, anchor_boxes[start : start + chunk])  # (G, <= chunk)
        val, idx = block.max(dim=0)
        vals.append(val)
        idxs.append(idx)
        cell_maxes.append(_cell_max(block, cell))
    cell_gt_max = torch.cat(cell_maxes, dim=1)  # (G, N)
    gt_max = cell_gt_max.amax(dim=1)
    return ChunkedMaxIoU(torch.cat(vals), torch.cat(idxs), gt_max, cell_gt_max, cell)


def anchors_at_gt_max(
    gt_boxes: Tensor, anchor_boxes: Tensor, iou_fn: IouFn, maxima: ChunkedMaxIoU
) -> Tensor:
    """Anchors whose IoU with some gt equals that gt's max IoU (ties included), as in
    detectron2's ``Matcher.set_low_quality_matches_``.

    Only the cells where some gt reaches its global max are revisited, and only for those gts.

    Args:
        gt_boxes: (G, 4) gt boxes.
        anchor_boxes: (R, 4) anchor boxes.
        iou_fn: the ``iou_fn`` given to :func:`chunked_max_iou`.
        maxima: :func:`chunked_max_iou`'s result for the same boxes.

    Returns:
        (R,) bool.
    """
    hit = torch.zeros(len(anchor_boxes), dtype=torch.bool, device=anchor_boxes.device)
    reached = maxima.cell_gt_max == maxima.gt_max[:, None]  # (G, N)
    cell = maxima.cell
    for n in reached.any(dim=0).nonzero().flatten().tolist():
        gts = reached[:, n].nonzero().flatten()  # (g,)
        start, end = n * cell, (n + 1) * cell
        block = iou_fn(gt_boxes[gts], anchor_boxes[start:end])  # (g, <= cell)
        hit[start:end] = (block == maxima.gt_max[gts, None]).any(dim=0)
    return hit
