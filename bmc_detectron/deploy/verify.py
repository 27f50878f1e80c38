"""Export-time check: the ONNX Runtime model against the PyTorch model it came from.

The detector is compared end to end (resize, graph, box scaling) on a synthetic smear at the test
size and on random noise of an odd size, as detection *sets* at the exported score threshold;
the classifier on random crops (batch 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from detectron2.config import CfgNode
from torch import nn

from bmc_detectron.deploy.compare import compare_detections
from bmc_detectron.deploy.runtime import OnnxCellClassifier, OnnxDetector

#: Tolerances of a passing check: box coordinates (pixels) and scores / probabilities.
BOX_TOL = 0.01
SCORE_TOL = 1e-4


def check_images(cfg: CfgNode, seed: int = 0) -> List[np.ndarray]:
    """Two BGR uint8 images: a synthetic smear at the test size, random noise of an odd size."""
    from bmc_detectron.data.synthetic import default_scale, generate_image

    short = int(cfg.INPUT.MIN_SIZE_TEST) or 320
    long = int(round(short * 4 / 3))
    rng = np.random.default_rng(seed)
    smear, _, _ = generate_image(rng, short, long, scale=default_scale(short, long))
    noise = rng.integers(0, 256, (short * 3 // 4 + 1, long * 5 // 4 + 1, 3), dtype=np.uint8)
    return [np.ascontiguousarray(smear[:, :, ::-1]), noise]


def verify_detector(cfg: CfgNode, model: nn.Module, onnx_path: Path) -> Dict[str, Any]:
    """Detections of ``model`` (PyTorch, eager) and of the exported graph on :func:`check_images`.

    Returns ``{"passed", "images": [{"size", "count_torch", "count_onnx", "matched",
    "max_box_diff", "max_score_diff"}, ...]}``.
    """
    from bmc_detectron.pipeline.detector import Detector

    torch_detector = Detector(
        model=model,
        class_names=[],
        min_size=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size=int(cfg.INPUT.MAX_SIZE_TEST),
        input_format=cfg.INPUT.FORMAT,
        device="cpu",
    )
    onnx_detector = OnnxDetector(onnx_path)
    images = []
    for image in check_images(cfg):
        result = compare_detections(torch_detector(image), onnx_detector(image))
        images.append(
            {
                "size": list(image.shape[:2]),
                **result.to_json(),
                "passed": result.equal(BOX_TOL, SCORE_TOL),
            }
        )
    return {"passed": all(r["passed"] for r in images), "images": images}


def verify_classifier(
    model: nn.Module, onnx_path: Path, crop_size: int, batch: int = 3
) -> Dict[str, Any]:
    """Probabilities, logits and pooled features of ``model`` and of the exported graph on
    random crops."""
    gen = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (batch, 3, crop_size, crop_size), generator=gen)
    crops = crops.to(torch.uint8)
    with torch.no_grad():
        logits = model.forward_logits(crops.float()).numpy()
        features = model.forward_features(crops.float()).numpy()
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    runtime = OnnxCellClassifier(onnx_path)
    prob_diff = float(np.abs(runtime.predict_crops(crops) - probs).max())
    logit_diff = float(np.abs(runtime.predict_logits(crops) - logits).max())
    feature_diff = float(np.abs(runtime.predict_logits_and_features(crops)[1] - features).max())
    return {
        "passed": max(prob_diff, logit_diff, feature_diff) <= SCORE_TOL,
        "batch": batch,
        "max_prob_diff": prob_diff,
        "max_logit_diff": logit_diff,
        "max_feature_diff": feature_diff,
    }


def describe_export(meta: Dict[str, Any], output: Path | str) -> str:
    """One line on an export: its kind, file, and the check's verdict and figures."""
    check = meta.get("verification")
    status = "PASSED" if check_passed(meta) else "DIFFERS"
    if check is None:
        details = "not verified"
    elif meta["kind"] == "classifier":
        details = (
            f"max prob diff {check['max_prob_diff']:.2e}, max logit diff "
            f"{check['max_logit_diff']:.2e} (batch {check['batch']})"
        )
    else:
        details = "; ".join(
            f"{r['size'][0]}x{r['size'][1]}: {r['matched']}/{r['count_a']} torch ~ "
            f"{r['count_b']} onnx, box {r['max_box_diff']:.1e} px, score {r['max_score_diff']:.1e}"
            for r in check["images"]
        )
    return f"{meta['kind']} exported: {output} (+ .json); check {status}: {details}"


def check_passed(meta: Dict[str, Any]) -> bool:
    """True when the export was not verified or its check passed."""
    check = meta.get("verification")
    return check is None or bool(check["passed"])
