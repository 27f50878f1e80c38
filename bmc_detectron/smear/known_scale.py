"""The exact scale of generated data: the schema of a COCO split's ``info["profile"]``.

A generator knows what a ruler can only estimate: the pixel size it drew at, the diameter it gave
the red cells and the diameters of the nucleated cells it placed. Every generator
(:mod:`bmc_detectron.data.synthetic.bmc_synth`, :mod:`bmc_detectron.data.synthetic.marrow`)
writes them with :func:`generator_profile`; :func:`read_known_scale` reads them back from a COCO
json (None for data that does not carry them, e.g. photographs), and
:mod:`~bmc_detectron.smear.profile` puts them in ``training_profile.json``.

Schema (keys of ``info["profile"]``; a generator may add its own keys beside them)::

    microns_per_pixel   float  the split's pixel size, um/px
    rbc_diameter_px     float  the mean mature red-cell diameter, px
    cell_diameter_px    dict   the nucleated cells' equivalent-circle diameters, px:
                               n, mean, sd, min, p5, p25, median, p75, p95, max
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

#: the key of a COCO json's ``info`` that holds the schema
PROFILE_KEY = "profile"


def size_profile(diameters: Sequence[float]) -> Dict[str, float]:
    """Summary of nucleated-cell diameters (px): count, mean, sd and percentiles."""
    d = np.asarray(diameters, np.float64)
    if d.size == 0:
        return {"n": 0}
    q = np.percentile(d, [0, 5, 25, 50, 75, 95, 100])
    out = {"n": int(d.size), "mean": float(d.mean()), "sd": float(d.std())}
    out.update(
        {k: float(v) for k, v in zip(("min", "p5", "p25", "median", "p75", "p95", "max"), q)}
    )
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


def mask_diameter(mask: np.ndarray) -> float:
    """Equivalent-circle diameter (px) of a boolean mask: the diameter of a disc of its area."""
    return float(2.0 * np.sqrt(np.count_nonzero(mask) / np.pi))


def generator_profile(
    microns_per_pixel: float,
    rbc_diameter_px: float,
    cell_diameters: Sequence[float],
    **extra: Any,
) -> Dict[str, Any]:
    """The ``info["profile"]`` of a generated split (the module doc's schema), ``extra`` keys
    (the generator's own, e.g. its base scale) after the schema's."""
    return {
        "microns_per_pixel": round(float(microns_per_pixel), 6),
        "rbc_diameter_px": round(float(rbc_diameter_px), 2),
        "cell_diameter_px": size_profile(cell_diameters),
        **extra,
    }


@dataclass(frozen=True)
class KnownScale:
    """A generated split's exact scale (see the module doc): pixel size (um/px), red-cell
    diameter (px) and the nucleated-cell diameter summary (px, :func:`size_profile`)."""

    microns_per_pixel: float
    rbc_diameter_px: float
    cell_diameter_px: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: Optional[Mapping[str, Any]]) -> Optional[KnownScale]:
        """The scale in a COCO ``info`` dict; None when it holds no (valid) generator profile."""
        profile = (info or {}).get(PROFILE_KEY) if isinstance(info, Mapping) else None
        if not isinstance(profile, Mapping):
            return None
        try:
            mpp = float(profile["microns_per_pixel"])
            rbc = float(profile["rbc_diameter_px"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (np.isfinite(mpp) and mpp > 0 and np.isfinite(rbc) and rbc > 0):
            return None
        cells = profile.get("cell_diameter_px")
        return cls(mpp, rbc, dict(cells) if isinstance(cells, Mapping) else {})

    def agrees(self, other: KnownScale, tolerance: float = 1e-3) -> bool:
        """Whether two splits have the same pixel size and red-cell diameter."""
        return bool(
            np.isclose(self.microns_per_pixel, other.microns_per_pixel, rtol=tolerance)
            and np.isclose(self.rbc_diameter_px, other.rbc_diameter_px, rtol=tolerance)
        )


def read_known_scale(json_file: Union[str, Path]) -> Optional[KnownScale]:
    """The exact scale in a COCO json's ``info["profile"]``; None when the file holds none or
    cannot be read."""
    try:
        data = json.loads(Path(json_file).read_text())
    except (OSError, ValueError):
        return None
    return KnownScale.from_info(data.get("info") if isinstance(data, dict) else None)
