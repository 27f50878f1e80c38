"""Markdown tables of the analyses."""

from __future__ import annotations

from typing import Dict, Optional

from bmc_detectron.analysis.tide import ERROR_NAMES, ERROR_TYPES
from bmc_detectron.reporting.tables import markdown_table


def _stat(value: Optional[float], digits: int = 2, percent: bool = False) -> str:
    """A statistic's cell: None as an en dash, a share as a percentage, else ``digits``
    decimals."""
    if value is None:
        return "–"
    return f"{100 * value:.1f} %" if percent else f"{value:.{digits}f}"


def assignment_markdown(summary: Dict[str, dict], note: str = "") -> str:
    """Dataset statistics per assigner (:func:`~.assignment.summarize_records`) as markdown."""
    header = [
        "assigner",
        "gts",
        "positives / gt",
        "median",
        "gts without positive",
        "positives centred outside box",
        "pos / gt: isolated",
        "1 neighbour",
        "2+",
        "small",
        "medium",
        "large",
    ]
    rows = []
    for name, s in summary.items():
        crowd, size = s["by_crowding"], s["by_size"]
        rows.append(
            [
                name,
                s["num_gts"],
                _stat(s["positives_per_gt_mean"]),
                _stat(s["positives_per_gt_median"], 1),
                _stat(s["share_gts_without_positive"], percent=True),
                _stat(s["share_positives_centre_outside_box"], percent=True),
                *(
                    _stat(crowd[k]["positives_per_gt_mean"])
                    for k in ("isolated", "1 neighbour", "2+")
                ),
                *(_stat(size[k]["positives_per_gt_mean"]) for k in ("small", "medium", "large")),
            ]
        )
    text = "# Label assignment statistics\n\n"
    if note:
        text += note + "\n\n"
    text += markdown_table(header, rows) + "\n"
    text += (
        "\nCrowding: number of other gts whose box overlaps the gt's box. Size: sqrt(box area) "
        "at the model's input size, in tertiles of the dataset's gts.\n"
    )
    return text


def errors_markdown(report: Dict[str, dict], note: str = "") -> str:
    """TIDE-style report (:func:`~.tide.analyse`) as markdown: AP50, then per error type its
    count and dAP, overall and for crowded / isolated cells."""
    splits = [k for k in ("overall", "crowded", "isolated") if k in report]
    header = ["error type"] + [f"{s}: dAP50 (count)" for s in splits]
    rows = []
    for kind in ERROR_TYPES:
        cells = [f"{report[s]['dAP'][kind]:.2f} ({report[s]['counts'][kind]})" for s in splits]
        rows.append([ERROR_NAMES[kind], *cells])
    for kind, label in (("fp", "all false positives"), ("fn", "all false negatives")):
        rows.append([label, *(f"{report[s]['dAP'][kind]:.2f}" for s in splits)])
    ap_row = ["**AP50**", *(f"**{report[s]['AP50']:.2f}**" for s in splits)]
    gt_row = [
        "gts / predictions",
        *(f"{report[s]['num_gt']} / {report[s]['num_pred']}" for s in splits),
    ]
    text = "# Error analysis (TIDE-style)\n\n"
    if note:
        text += note + "\n\n"
    text += markdown_table(header, [ap_row, gt_row, *rows]) + "\n"
    th = report.get("thresholds", {})
    text += (
        f"\ndAP50: AP50 gained when every error of the type is fixed by an oracle (foreground IoU "
        f"{th.get('pos', 0.5)}, background IoU {th.get('bg', 0.1)}, at most "
        f"{th.get('max_dets', 100)} detections per image). Crowded: gts whose box overlaps another "
        "gt's box; a prediction goes with the gt it matches or whose error it is, else with the "
        "gt it overlaps most; a false positive that overlaps no gt (background) counts as "
        "isolated. Each split is analysed on its own gts and predictions, so its dAPs are "
        "relative to its own AP50.\n"
    )
    return text
