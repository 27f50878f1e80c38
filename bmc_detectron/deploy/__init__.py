"""Deployment: ONNX export of the detector and the cell classifier, and an ONNX Runtime path.

- :func:`~.export.export_onnx` writes ``model.onnx`` and its ``model.onnx.json`` sidecar
  (``python -m bmc_detectron.tools.export_onnx``);
- :class:`~.runtime.OnnxDetector`, :class:`~.runtime.OnnxCellClassifier` and
  :func:`~.runtime.build_onnx_counter` run them on ONNX Runtime alone, with the same pre- and
  post-processing as the PyTorch models;
- :func:`~.compare.compare_detections` compares two detection results as sets.

``onnx`` and ``onnxruntime`` (``pip install -e .[deploy]``) are imported only when used.
"""

from bmc_detectron.deploy.compare import SetComparison, compare_detections
from bmc_detectron.deploy.export import (
    ExportError,
    deformable_parts,
    export_classifier,
    export_detector,
    export_onnx,
)
from bmc_detectron.deploy.runtime import (
    OnnxCellClassifier,
    OnnxDetector,
    build_onnx_counter,
    make_session,
    postprocess,
)
from bmc_detectron.deploy.sidecar import read_sidecar, sidecar_path

__all__ = [
    "ExportError",
    "OnnxCellClassifier",
    "OnnxDetector",
    "SetComparison",
    "build_onnx_counter",
    "compare_detections",
    "deformable_parts",
    "export_classifier",
    "export_detector",
    "export_onnx",
    "make_session",
    "postprocess",
    "read_sidecar",
    "sidecar_path",
]
