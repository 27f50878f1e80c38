"""The red-cell ruler against the truth: its bias on generated fields of known scale (issue 31 s.1).

    BMC_SHARED_DATASETS=/work/shared/datasets python -m studies.scale.ruler_bias \\
        [--fields 6] [--seed 0] [--out docs/results/scale/RESULTS_ruler_bias.md]

For ``--fields`` generated fields per scale, the count's red-cell reading
(:func:`bmc_detectron.pipeline.field_checks.measure_rbc`, the ruler of ``--auto-scale``) is
compared with the diameter the generator drew the red cells at:

- ``bmc_synth`` (procedural smears, 256 x 256 px) at cell scales 0.7, 1, 1.5 and 2: the truth of
  a field is ``mean(RBC_DIAMETER) x scale x zoom`` px (its own zoom, :func:`draw_smear`);
- ``marrow_real`` (dense composites of real cells, 512 x 512 px) at 0.18, 0.25 and 0.35 um/px:
  the truth is the 7.5 um red cell of the backgrounds at that pixel size (the generator's
  ``info["profile"]["rbc_diameter_px"]``). Needs ``$BMC_SHARED_DATASETS`` (skipped without it).

Bias = reading / truth - 1 per field; a failure is a field the ruler gives no reading on.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from bmc_detectron.pipeline.field_checks import measure_rbc
from bmc_detectron.reporting.tables import markdown_table
from studies.pages import today, write_page

SYNTH_SCALES = (0.7, 1.0, 1.5, 2.0)
MARROW_MPP = (0.18, 0.25, 0.35)
#: a reading within this share of the truth counts as right (the scale tolerance of the count)
TOLERANCE = 0.15
PAGE = Path("docs/results/scale/RESULTS_ruler_bias.md")


@dataclass(frozen=True)
class BiasSummary:
    """The ruler on a set of fields: readings (px, ``nan`` = failure), truths (px), and the
    relative bias of the readings (mean, median, spread as the interquartile range)."""

    readings: List[float]
    truths: List[float]

    @property
    def bias(self) -> np.ndarray:
        r = np.asarray(self.readings, np.float64)
        return (r / np.asarray(self.truths, np.float64) - 1.0)[np.isfinite(r)]

    @property
    def failures(self) -> int:
        return int(np.sum(~np.isfinite(np.asarray(self.readings, np.float64))))

    def stats(self) -> Dict[str, float]:
        """fields, failures, mean / median bias, IQR of the bias, share within TOLERANCE."""
        b = self.bias
        out: Dict[str, float] = {"fields": len(self.readings), "failures": self.failures}
        if b.size == 0:
            return {**out, "mean": np.nan, "median": np.nan, "iqr": np.nan, "within": 0.0}
        q1, med, q3 = np.percentile(b, [25, 50, 75])
        within = float(np.sum(np.abs(b) <= TOLERANCE)) / len(self.readings)
        return {**out, "mean": float(b.mean()), "median": float(med), "iqr": float(q3 - q1),
                "within": within}  # fmt: skip


def ruler_reading(image_rgb: np.ndarray) -> float:
    """The count's red-cell diameter (px) of an RGB field; ``nan`` when it reads none."""
    return float(measure_rbc(image_rgb, "RGB").median_px)


def ruler_bias(fields: Iterable[Tuple[np.ndarray, float]]) -> BiasSummary:
    """The ruler's readings on ``(RGB field, true red-cell diameter px)`` pairs."""
    readings, truths = [], []
    for image, truth in fields:
        readings.append(ruler_reading(image))
        truths.append(float(truth))
    return BiasSummary(readings, truths)


def synth_fields(scale: float, n: int, seed: int, size: int = 256) -> Iterator[Tuple]:
    """``n`` bmc_synth fields at cell scale ``scale`` with their true red-cell diameter."""
    from bmc_detectron.data.synthetic import RBC_DIAMETER, draw_smear, image_rng
    from bmc_detectron.data.synthetic.bmc_synth import default_cells_per_image

    cells = default_cells_per_image(size, size, scale)
    for i in range(n):
        field = draw_smear(image_rng(seed, f"ruler/{scale}", i), size, size, cells, scale)
        yield field.image, float(np.mean(RBC_DIAMETER)) * scale * field.zoom


def marrow_fields(mpp: float, n: int, seed: int) -> Iterator[Tuple]:
    """``n`` marrow_real ``val`` fields at ``mpp`` um/px with the generator's red-cell diameter
    (a small cell pool and few backgrounds: the study's fields, not the dataset's)."""
    from bmc_detectron.data.synthetic.composer import image_rng
    from bmc_detectron.data.synthetic.cutouts import RBC_MICRONS
    from bmc_detectron.data.synthetic.marrow import FieldSpec, generate_field, split_inputs

    spec = FieldSpec(microns_per_pixel=mpp)
    pool, tiles = split_inputs("val", seed, spec, n_backgrounds=6, cell_limit=150)
    for i in range(n):
        image = generate_field(image_rng(seed, f"ruler/{mpp}", i), pool, tiles, spec)[0]
        yield image, RBC_MICRONS / mpp


def run(n: int, seed: int, with_marrow: bool) -> List[Tuple[str, str, float, BiasSummary]]:
    """(dataset, scale label, mean truth px, summary) per scale."""
    rows = []
    for scale in SYNTH_SCALES:
        s = ruler_bias(synth_fields(scale, n, seed))
        rows.append(("bmc_synth", f"scale {scale:g}", float(np.mean(s.truths)), s))
    if with_marrow:
        for mpp in MARROW_MPP:
            s = ruler_bias(marrow_fields(mpp, n, seed))
            rows.append(("marrow_real", f"{mpp:g} um/px", float(np.mean(s.truths)), s))
    return rows


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.1f} %"


def table(rows: Sequence[Tuple[str, str, float, BiasSummary]]) -> str:
    """The markdown table of the study, one row per scale and one per dataset (all scales)."""
    body = []
    for dataset in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == dataset]
        both = BiasSummary(
            [v for r in mine for v in r[3].readings], [v for r in mine for v in r[3].truths]
        )
        for name, label, truth, s in [*mine, (dataset, "all", np.nan, both)]:
            st = s.stats()
            body.append([
                name, label, "" if not np.isfinite(truth) else f"{truth:.1f}", st["fields"],
                st["failures"], _pct(st["mean"]), _pct(st["median"]),
                "n/a" if not np.isfinite(st["iqr"]) else f"{100 * st['iqr']:.1f} %",
                f"{100 * st['within']:.0f} %",
            ])  # fmt: skip
    headers = ["data", "scale", "true RBC px", "fields", "failures", "mean bias", "median bias",
               "spread (IQR)", f"within {TOLERANCE:.0%}"]  # fmt: skip
    return markdown_table(headers, body)


def page(rows, command: str, seconds: float, marrow_note: Optional[str]) -> str:
    lines = [
        "# Red-cell ruler against the truth",
        "",
        f"Generated by `{command}` on {today()} ({seconds:.0f} s; issue 31, section 1). "
        "The reading is the count's red-cell ruler (`measure_rbc` of "
        "`bmc_detectron/pipeline/field_checks.py`, what `--auto-scale` relies on); the truth is "
        "the diameter the generator drew the red cells at (the value `training_profile.json` "
        "now stores for generated data, `scale_source: generator`). Bias = reading / truth - 1; "
        "spread = interquartile range of the bias over fields; a failure is a field without a "
        "reading. See the docstring of `studies/scale/ruler_bias.py` for the fields.",
        "",
        table(rows),
        "",
    ]
    if marrow_note:
        lines += [marrow_note, ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fields", type=int, default=6, help="fields per scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PAGE), help="the results page")
    args = p.parse_args(argv)
    from bmc_detectron.data.paths import shared_datasets_root

    with_marrow = (shared_datasets_root() / "pbc_wbc").is_dir()
    note = None if with_marrow else "marrow_real skipped: no shared data ($BMC_SHARED_DATASETS)."
    start = time.perf_counter()
    rows = run(args.fields, args.seed, with_marrow)
    command = f"python -m studies.scale.ruler_bias --fields {args.fields} --seed {args.seed}"
    write_page(args.out, page(rows, command, time.perf_counter() - start, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
