"""Evaluation of the cell classifier: accuracy, per-class precision / recall / F1, confusion matrix.

:func:`classification_metrics` computes everything from true and predicted class ids;
:class:`ClassificationEvaluator` is the detectron2 ``DatasetEvaluator`` that collects them during
``inference_on_dataset`` and writes, under its output folder, ``classification_metrics.json``,
``confusion_matrix.csv`` and ``confusion_matrix.png`` (each atomically).

Conventions: the confusion matrix has true classes in rows and predictions in columns. A class
with no sample in the evaluation set is *absent*: support 0, recall and F1 ``None`` (null in
JSON), and it is left out of the macro averages, which run over the classes present. A present
class that is never predicted has precision 0.
"""

from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from bmc_detectron.reporting.plots import pyplot
from bmc_detectron.utils.io import atomic_write_bytes, atomic_write_text, write_json_atomic

logger = logging.getLogger(__name__)


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    for name, ids in (("label", labels), ("prediction", preds)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} ids outside [0, {num_classes}): {sorted(set(ids.tolist()))}")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> Optional[float]:
    return float(num / den) if den > 0 else None


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def classification_metrics(
    labels: Sequence[int], preds: Sequence[int], class_names: Sequence[str]
) -> Dict[str, object]:
    """Accuracy, per-class and macro precision / recall / F1 and the confusion matrix.

    Args:
        labels, preds: (N,) true and predicted class ids in ``[0, K)``.
        class_names: the K class names.

    Returns:
        dict with ``num_samples``, ``accuracy``, ``macro_precision``, ``macro_recall``,
        ``macro_f1`` (over present classes; ``None`` when N is 0), ``per_class`` (name ->
        ``precision``, ``recall``, ``f1``, ``support``, ``predicted``, ``absent``),
        ``absent_classes``, ``classes`` and ``confusion_matrix`` (K lists of K counts).
    """
    k = len(class_names)
    cm = confusion_matrix(labels, preds, k)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    per_class: Dict[str, Dict[str, object]] = {}
    for c, name in enumerate(class_names):
        present = support[c] > 0
        precision = _ratio(tp[c], predicted[c])
        if precision is None and present:
            precision = 0.0
        recall = _ratio(tp[c], support[c])
        f1 = None
        if present:
            f1 = _ratio(2 * precision * recall, precision + recall) or 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support[c]),
            "predicted": int(predicted[c]),
            "absent": not present,
        }
    present = [v for v in per_class.values() if not v["absent"]]
    return {
        "num_samples": int(cm.sum()),
        "accuracy": _ratio(tp.sum(), cm.sum()),
        "macro_precision": _mean([v["precision"] for v in present]),
        "macro_recall": _mean([v["recall"] for v in present]),
        "macro_f1": _mean([v["f1"] for v in present]),
        "per_class": per_class,
        "absent_classes": [n for n, v in per_class.items() if v["absent"]],
        "classes": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


def confusion_csv(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """The confusion matrix as CSV text: header ``true\\predicted,<names>``, one row per class."""
    lines = [",".join(["true\\predicted", *class_names])]
    for name, row in zip(class_names, np.asarray(cm)):
        lines.append(",".join([name, *(str(int(v)) for v in row)]))
    return "\n".join(lines) + "\n"


def confusion_png(
    cm: np.ndarray, class_names: Sequence[str], row_names: Sequence[str], title: str
) -> bytes:
    """PNG bytes of the confusion matrix: counts in the cells, colour = share of the true class."""
    plt = pyplot()
    cm = np.asarray(cm)
    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = max(4.5, 0.55 * k + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=110)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(
                    j, i, str(int(cm[i, j])), ha="center", va="center", color=colour, fontsize=8
                )
    ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(row_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def detectron2_results(metrics: Dict[str, object]) -> Dict[str, float]:
    """The float-only view for detectron2 (hooks, ``print_csv_format``): the averages, then
    ``precision-/recall-/f1-<class>`` of every present class."""
    out = {
        k: float(metrics[k]) for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")
    }
    for name, v in metrics["per_class"].items():
        if not v["absent"]:
            for key in ("precision", "recall", "f1"):
                out[f"{key}-{name}"] = float(v[key])
    return out


class ClassificationEvaluator(DatasetEvaluator):
    """Collects ``input["label"]`` and ``output["pred_class"]`` pairs; :meth:`evaluate` returns
    ``{"classification": detectron2_results(metrics)}`` and writes the files (main process)."""

    def __init__(
        self,
        dataset_name: str,
        class_names: Sequence[str],
        *,
        output_dir: Optional[str] = None,
        metrics_file: str = "classification_metrics.json",
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: the evaluated dataset (for the log, the JSON and full class names).
            class_names: the classifier's K class names, in id order.
            output_dir: where the JSON, CSV and PNG go (nothing written if None).
            metrics_file: file name of the metrics JSON in ``output_dir``.
            distributed: gather the pairs of every process before computing.
        """
        self._dataset_name = dataset_name
        self._class_names = list(class_names)
        self._output_dir = output_dir
        self._metrics_file = metrics_file
        self._distributed = distributed
        full = MetadataCatalog.get(dataset_name).get("thing_full_names")
        if full is not None and len(full) == len(self._class_names):
            self._row_names = [f"{a} ({f})" for a, f in zip(self._class_names, full)]
        else:
            self._row_names = list(self._class_names)
        self.reset()

    def reset(self) -> None:
        self._pairs: List[tuple] = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "label" not in inp:
                raise ValueError(
                    f"ClassificationEvaluator: input without 'label' ({inp.get('file_name')})"
                )
            self._pairs.append((int(inp["label"]), int(out["pred_class"])))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        pairs = self._pairs
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(pairs, dst=0)
            if not comm.is_main_process():
                return {}
            pairs = [p for part in gathered for p in part]
        if not pairs:
            logger.warning("%s: no crops were evaluated", self._dataset_name)
            return {}
        labels, preds = zip(*pairs)
        metrics = classification_metrics(labels, preds, self._class_names)
        self._log(metrics)
        if self._output_dir:
            self._save(metrics)
        return OrderedDict(classification=detectron2_results(metrics))

    def _log(self, metrics: Dict[str, object]) -> None:
        def pct(v):
            return "absent" if v is None else f"{100 * v:.1f}"

        rows = [
            (name, pct(v["precision"]), pct(v["recall"]), pct(v["f1"]), v["support"])
            for name, v in metrics["per_class"].items()
        ]
        table = tabulate(rows, headers=["class", "precision %", "recall %", "F1 %", "support"])
        logger.info(
            "%s: %d crops, top-1 accuracy %.2f %%, macro-F1 %.2f %% (over %d present classes; "
            "absent: %s)\n%s",
            self._dataset_name,
            metrics["num_samples"],
            100 * metrics["accuracy"],
            100 * metrics["macro_f1"],
            len(self._class_names) - len(metrics["absent_classes"]),
            ", ".join(metrics["absent_classes"]) or "none",
            table,
        )

    def _save(self, metrics: Dict[str, object]) -> None:
        folder = self._output_dir
        write_json_atomic(
            {"dataset": self._dataset_name, **metrics},
            os.path.join(folder, self._metrics_file),
            indent=2,
        )
        cm = np.asarray(metrics["confusion_matrix"])
        atomic_write_text(
            os.path.join(folder, "confusion_matrix.csv"), confusion_csv(cm, self._class_names)
        )
        title = (
            f"{self._dataset_name}: top-1 {100 * metrics['accuracy']:.1f} %, "
            f"macro-F1 {100 * metrics['macro_f1']:.1f} % ({metrics['num_samples']} crops)"
        )
        rows = [
            f"{row} [absent]" if name in metrics["absent_classes"] else row
            for name, row in zip(self._class_names, self._row_names)
        ]
        png = confusion_png(cm, self._class_names, rows, title)
        atomic_write_bytes(os.path.join(folder, "confusion_matrix.png"), png)
        logger.info("%s: metrics and confusion matrix -> %s", self._dataset_name, folder)
