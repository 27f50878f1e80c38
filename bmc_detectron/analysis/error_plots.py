"""Figure of the TIDE-style report: dAP50 of each error type, overall and by crowding."""

from __future__ import annotations

from typing import Dict

import numpy as np
from matplotlib.figure import Figure

from bmc_detectron.analysis.tide import ERROR_NAMES, ERROR_TYPES
from bmc_detectron.reporting.plots import new_figure

SPLIT_COLORS = {"overall": "#444444", "crowded": "#d62728", "isolated": "#1f77b4"}


def draw_delta_ap(report: Dict[str, dict], title: str = "") -> Figure:
    """Grouped horizontal bars: per error type, the dAP50 of its oracle in each split, with the
    error count; the legend gives each split's AP50."""
    splits = [s for s in SPLIT_COLORS if s in report]
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(ERROR_TYPES))
    height = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        values = [report[split]["dAP"][k] for k in ERROR_TYPES]
        pos = y + (i - (len(splits) - 1) / 2) * height
        label = f"{split} (AP50 {report[split]['AP50']:.1f}, {report[split]['num_gt']} gts)"
        ax.barh(pos, values, height=height, color=SPLIT_COLORS[split], label=label)
        for p, v, k in zip(pos, values, ERROR_TYPES):
            ax.text(v, p, f" {v:.1f} (n={report[split]['counts'][k]})", va="center", fontsize=6)
    ax.set_yticks(y)
    ax.set_yticklabels([ERROR_NAMES[k] for k in ERROR_TYPES])
    ax.invert_yaxis()
    ax.set_xlabel("dAP50 when the errors of the type are fixed (oracle)")
    right = max([report[s]["dAP"][k] for s in splits for k in ERROR_TYPES] + [1.0])
    ax.set_xlim(0, right * 1.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    return fig
