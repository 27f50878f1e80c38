"""Marrow-like fields composed of real cells (``marrow_real``): dense, touching, overlapping.

Real PBC white cells (every fine type but basophils, :mod:`~bmc_detectron.data.synthetic.cutouts`)
are cut out with a mask and pasted, 20-40 per 512 x 512 field by default, on real red-cell
backgrounds quilted from PBC and BCCD photographs
(:mod:`~bmc_detectron.data.synthetic.backgrounds`). Per cell: a class drawn from the marrow
differential of ``bmc_synth`` (:data:`~bmc_detectron.data.synthetic.bmc_synth.CLASS_FREQUENCIES`,
without the absent blasts and plasma cells), a random photo of that class, its white balance
matched to the field's plasma, a mild H&E stain change, a size ``base scale x U(0.6, 1.6)``, a
random rotation and flip, a random position. Per field: an H&E stain change
(:func:`~bmc_detectron.smear.stain.stain_shift`), blur and JPEG compression.

**Pixel size.** A field has :data:`FIELD_MICRONS_PER_PIXEL` = 0.25 um/px (a 40x slide scanner;
a 512 px field is 128 um wide); its red cells keep their real size (7.5 um = 30 px). The PBC
photos have 0.114 um/px (measured on their red cells, see ``cutouts``), so the base scale of a
cell is 0.114 / 0.25 = 0.456, and the jitter spreads nucleated cells over 0.27-0.73 of their
photo size: a segmented neutrophil of 12 um (105 px in PBC) becomes 29-77 px. The exact pixel
size, the base scale and the distribution of the nucleated-cell diameters (equivalent-circle
diameter of each pasted mask, px) are written to the split's COCO ``info["profile"]`` (the schema
of :mod:`bmc_detectron.smear.known_scale`).

**Boxes and occlusion** (:class:`~bmc_detectron.data.synthetic.composer.CellLayer`): cells may
touch; each cell shares at most ``max_overlap`` (0.25) of its pixels with other cells, a later
cell lying on top. A box is the tight box of the whole cell inside the field, including a part
hidden under a later cell (at most a quarter of it); a cell cut by the field border gets the box of
its pixels inside the field, and a cell with less than half of its pixels inside is not placed.
Each annotation also carries ``crowding`` (isolated / touching / overlapping), ``overlap`` (its
shared share) and ``diameter_px``.

Splits: ``train`` takes the cells and PBC backgrounds of PBC ``train`` + ``train_extra`` and BCCD
``train`` backgrounds; ``val`` only PBC ``val`` and BCCD ``val``. PBC's held-back ``test`` split
and BCCD ``test`` are never read.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.paths import shared_datasets_root
from bmc_detectron.data.pbc import PBC_MARROW_SPLITS
from bmc_detectron.data.synthetic.backgrounds import (
    Tile,
    bccd_backgrounds,
    make_background,
    pbc_backgrounds,
    quilt,
)
from bmc_detectron.data.synthetic.bmc_synth import CLASS_FREQUENCIES
from bmc_detectron.data.synthetic.composer import (
    CellLayer,
    RenderedCell,
    clean_photo,
    image_rng,
    paste_patch,
    write_coco_split,
)
from bmc_detectron.data.synthetic.cutouts import (
    PBC_MICRONS_PER_PIXEL,
    RBC_MICRONS,
    CellSource,
    CutOut,
    CutOutError,
    pbc_cells,
    read_pbc_cell,
)
from bmc_detectron.data.synthetic.procedural import rgb_to_od
from bmc_detectron.smear.known_scale import generator_profile, mask_diameter
from bmc_detectron.smear.stain import stain_shift

logger = logging.getLogger(__name__)

#: um per pixel of the generated fields
FIELD_MICRONS_PER_PIXEL = 0.25
#: the splits and the BCCD split their backgrounds come from (PBC: :data:`PBC_MARROW_SPLITS`)
MARROW_SPLITS: Dict[str, str] = {"train": "train", "val": "val"}
#: fields per split of the ``marrow_real`` datasets (``bmc marrow-fields``, ``bmc demo``)
MARROW_SPLIT_SIZES: Dict[str, int] = {"train": 400, "val": 100}
#: a cell is tried at this many random positions before it is left out
PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class FieldSpec:
    """How fields are made (the defaults are the ``marrow_real`` datasets)."""

    height: int = 512
    width: int = 512
    cells_per_field: Tuple[int, int] = (20, 40)
    microns_per_pixel: float = FIELD_MICRONS_PER_PIXEL
    scale_jitter: Tuple[float, float] = (0.6, 1.6)
    max_overlap: float = 0.25
    bccd_share: float = 0.5  # share of fields on a BCCD background (when BCCD tiles exist)
    field_stain: Tuple[float, float] = (0.15, 0.04)  # H&E scale range, shift range per field
    cell_stain: float = 0.08  # H&E scale range per cell
    blur_sigma: Tuple[float, float] = (0.3, 1.0)
    jpeg_quality: Tuple[int, int] | None = (60, 95)

    @property
    def base_scale(self) -> float:
        """PBC photo pixels to field pixels at jitter 1."""
        return PBC_MICRONS_PER_PIXEL / self.microns_per_pixel


class CellPool:
    """The cells a split draws from, by class: cut-outs, or PBC images cut on first use (kept in
    a cache of ``cache_size``). Cells whose mask fails its check are skipped and listed in
    :attr:`skipped` (file and reason)."""

    def __init__(self, items: Sequence[Union[CellSource, CutOut]], cache_size: int = 1024):
        self.by_class: Dict[int, List[Union[CellSource, CutOut]]] = {}
        for item in items:
            self.by_class.setdefault(int(item.cls), []).append(item)
        self.cache: OrderedDict[CellSource, CutOut] = OrderedDict()
        self.cache_size = cache_size
        self.skipped: Dict[str, str] = {}

    def classes(self) -> List[int]:
        return sorted(self.by_class)

    def _cut(self, item: Union[CellSource, CutOut]) -> CutOut | None:
        if isinstance(item, CutOut):
            return item
        if str(item.image) in self.skipped:
            return None
        if item in self.cache:
            self.cache.move_to_end(item)
            return self.cache[item]
        try:
            cell = read_pbc_cell(item)
        except CutOutError as e:
            self.skipped[str(item.image)] = str(e)
            logger.warning("%s", e)
            return None
        self.cache[item] = cell
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return cell

    def draw(self, rng: np.random.Generator, cls: int) -> CutOut | None:
        """A random cell of class ``cls`` (None if every try hit a skipped cell)."""
        items = self.by_class[cls]
        for _ in range(10):
            cell = self._cut(items[int(rng.integers(len(items)))])
            if cell is not None:
                return cell
        return None


def pbc_relative(path: str) -> str:
    """A PBC file as ``<split>/images/<name>`` (relative to the shared ``pbc_wbc``)."""
    return "/".join(Path(path).parts[-3:])


def class_probabilities(classes: Sequence[int]) -> np.ndarray:
    """The marrow differential (``CLASS_FREQUENCIES``) over the classes that have cells."""
    probs = np.zeros(len(MARROW_ABBRS))
    probs[list(classes)] = np.asarray(CLASS_FREQUENCIES)[list(classes)]
    return probs / probs.sum()


def render_cutout(
    rng: np.random.Generator, cell: CutOut, scale: float, plasma: np.ndarray, stain: float
) -> RenderedCell:
    """``cell`` at ``scale``, turned by a random angle (and flipped), white balance moved from
    its photo's plasma to ``plasma``, H and E scaled by up to ``stain``, in optical density."""
    rgb = cell.rgb.astype(np.float32) * (plasma / np.maximum(cell.plasma, 1.0))
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    h_scale, e_scale = rng.uniform(1.0 - stain, 1.0 + stain, 2)
    if stain > 0:
        rgb = stain_shift(rgb, float(h_scale), 0.0, float(e_scale), 0.0)
    h, w = cell.mask.shape
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, size, interpolation=interp)
    alpha = cv2.resize(cell.alpha, size, interpolation=interp)
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    angle = float(rng.uniform(0.0, 360.0))
    sw, sh = size
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    out_w, out_h = int(np.ceil(sw * c + sh * s)) + 2, int(np.ceil(sw * s + sh * c)) + 2
    m = cv2.getRotationMatrix2D((sw / 2.0, sh / 2.0), angle, 1.0)
    m[:, 2] += ((out_w - sw) / 2.0, (out_h - sh) / 2.0)
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        m,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    alpha = cv2.warpAffine(np.ascontiguousarray(alpha), m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    mask = alpha >= 0.5
    alpha = np.where(mask, alpha, 0.0).astype(np.float32)
    od = rgb_to_od(rgb) * alpha[..., None]
    return RenderedCell(od.astype(np.float32), alpha, mask, cell.cls)


def field_optics(rng: np.random.Generator, image: np.ndarray, spec: FieldSpec) -> np.ndarray:
    """This field's stain (H&E scale and shift), blur and JPEG compression (each skipped when
    its range is zero, or ``jpeg_quality`` is None: clean fields for tests)."""
    a, b = spec.field_stain
    h_scale, e_scale = rng.uniform(1.0 - a, 1.0 + a, 2)
    h_shift, e_shift = rng.uniform(-b, b, 2)
    out = image
    if a > 0 or b > 0:
        out = stain_shift(out, float(h_scale), float(h_shift), float(e_scale), float(e_shift))
    sigma = float(rng.uniform(*spec.blur_sigma))
    if sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if spec.jpeg_quality is None:
        return out
    quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
    ok, jpeg = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])


def generate_field(
    rng: np.random.Generator,
    pool: CellPool,
    tiles: Sequence[Sequence[Tile]],
    spec: FieldSpec = FieldSpec(),
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Dict[str, object]]]:
    """One field: (RGB uint8 image, (N, 4) float32 XYXY boxes, (N,) int64 classes, per-box extra
    annotation keys). ``tiles``: background tile sets, e.g. ``[pbc_tiles, bccd_tiles]`` (empty
    sets are skipped); the last set is used for a share ``spec.bccd_share`` of the fields. The
    field's plasma colour is that of a random tile of the set."""
    sets = [list(t) for t in tiles if len(t)]
    use_last = len(sets) > 1 and rng.random() < spec.bccd_share
    chosen = sets[-1] if use_last else sets[0]
    first = int(rng.integers(len(chosen)))
    chosen = chosen[first:] + chosen[:first]
    background = quilt(rng, chosen, spec.height, spec.width)
    plasma = chosen[0].plasma
    od = rgb_to_od(background).astype(np.float32)
    layer = CellLayer(spec.height, spec.width, spec.max_overlap)
    probs = class_probabilities(pool.classes())
    n = int(rng.integers(spec.cells_per_field[0], spec.cells_per_field[1] + 1))
    classes, extras = [], []
    for cls in rng.choice(len(probs), size=n, p=probs):
        cut = pool.draw(rng, int(cls))
        if cut is None:
            continue
        scale = spec.base_scale * rng.uniform(*spec.scale_jitter)
        cell = render_cutout(rng, cut, scale, plasma, spec.cell_stain)
        for _ in range(PLACEMENT_TRIES):
            cx, cy = int(rng.integers(0, spec.width)), int(rng.integers(0, spec.height))
            if layer.place(cell, cx, cy) is not None:
                paste_patch(od, cell.od, cell.alpha, cx, cy, 1.0)
                classes.append(int(cls))
                diameter = mask_diameter(cell.mask)
                source = pbc_relative(cut.source)
                extras.append({"diameter_px": round(float(diameter), 2), "source": source})
                break
    for extra, crowd, share in zip(extras, layer.crowding(), layer.overlap_shares()):
        extra.update(crowding=crowd, overlap=round(share, 4))
    image = field_optics(rng, clean_photo(od), spec)
    boxes = (
        np.stack(layer.boxes).astype(np.float32) if layer.boxes else np.zeros((0, 4), np.float32)
    )
    return image, boxes, np.asarray(classes, np.int64), extras


def split_inputs(
    split: str,
    seed: int,
    spec: FieldSpec = FieldSpec(),
    shared_root: Union[str, Path, None] = None,
    n_backgrounds: int = 48,
    cell_limit: int | None = None,
) -> Tuple[CellPool, List[List[Tile]]]:
    """The cell pool and the (PBC, BCCD) background tiles of ``split`` (:data:`MARROW_SPLITS`).

    ``n_backgrounds`` photos of each kind are made into tiles (a seeded choice);
    ``cell_limit`` keeps only that many PBC images (a seeded choice, for small runs). BCCD is
    optional: without it every field has a PBC background.
    """
    if split not in MARROW_SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {sorted(MARROW_SPLITS)}")
    root = Path(shared_root) if shared_root is not None else shared_datasets_root()
    rng = image_rng(seed, f"{split}/inputs", 0)
    cells = pbc_cells(root / "pbc_wbc", PBC_MARROW_SPLITS[split])
    if cell_limit is not None and cell_limit < len(cells):
        cells = [cells[i] for i in sorted(rng.choice(len(cells), cell_limit, replace=False))]
    sources = [pbc_backgrounds(cells)]
    if (root / "bccd" / "Annotations").is_dir():
        sources.append(bccd_backgrounds(root / "bccd", MARROW_SPLITS[split]))
    tiles = []
    for kind in sources:
        picks = sorted(rng.choice(len(kind), min(n_backgrounds, len(kind)), replace=False))
        tiles.append([make_background(kind[i], spec.microns_per_pixel) for i in picks])
    return CellPool(cells), tiles


def generate_dataset(
    out_dir: Union[str, Path],
    split: str,
    num_fields: int,
    seed: int = 0,
    spec: FieldSpec = FieldSpec(),
    shared_root: Union[str, Path, None] = None,
    n_backgrounds: int = 48,
    cell_limit: int | None = None,
) -> Path:
    """Write ``num_fields`` fields of ``split`` as ``out_dir/<split>/NNNNNN.png`` and the COCO
    json ``out_dir/annotations/<split>.json`` (marrow category ids, class index + 1); returns
    the json path. Same arguments and data give the same files. ``info["profile"]`` holds the
    pixel size and the nucleated-cell diameters (px); see :func:`split_inputs` for the rest."""
    pool, tiles = split_inputs(split, seed, spec, shared_root, n_backgrounds, cell_limit)
    diameters: List[float] = []
    crowding: Dict[str, int] = {"isolated": 0, "touching": 0, "overlapping": 0}
    info: Dict[str, object] = {
        "description": "bmc-detectron marrow-like fields: real PBC cells, red-cell backgrounds",
        "split": split,
        "seed": int(seed),
        "spec": asdict(spec),
        "sources": {
            "cells": [f"pbc_wbc/{s}" for s in PBC_MARROW_SPLITS[split]],
            "backgrounds": [f"pbc_wbc/{s}" for s in PBC_MARROW_SPLITS[split]]
            + ([f"bccd/{MARROW_SPLITS[split]}"] if len(tiles) > 1 else []),
        },
    }

    def samples():
        for i in range(num_fields):
            image, boxes, classes, extras = generate_field(
                image_rng(seed, split, i), pool, tiles, spec
            )
            diameters.extend(e["diameter_px"] for e in extras)
            for e in extras:
                crowding[e["crowding"]] += 1
            yield image, boxes, classes, extras
        # write_coco_split serialises info after the last sample: complete it here
        info["profile"] = generator_profile(
            spec.microns_per_pixel,
            RBC_MICRONS / spec.microns_per_pixel,
            diameters,
            base_scale=round(spec.base_scale, 4),
            source_microns_per_pixel=PBC_MICRONS_PER_PIXEL,
            crowding=crowding,
        )
        info["skipped_cells"] = {pbc_relative(k): v for k, v in sorted(pool.skipped.items())}

    return write_coco_split(out_dir, split, samples(), info)
