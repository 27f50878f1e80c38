"""Export a detector or a cell classifier to ONNX, with a JSON sidecar, and check it.

    bmc export-onnx --config-file C --weights W --output model.onnx \\
        [--no-verify] [KEY VALUE ...]

Writes ``model.onnx`` and ``model.onnx.json`` (class names, colours, input format and
normalisation, resize rule, score threshold, crop size / margin, provenance; see
:mod:`bmc_detectron.deploy`). Dense detectors (``BMCRetinaNet``, ``RetinaNet``; deformable convs
included) and ``BMCCellClassifier`` are supported. Unless ``--no-verify``, the ONNX Runtime model
is compared with the PyTorch model. Exit status: 0 exported (and verified), 1 exported but the
check found differences, 2 bad input (config, weights, unsupported model, missing onnx packages).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from bmc_detectron.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, help="detector or classifier config (yaml)")
    p.add_argument("--weights", required=True, help="weights (.pth / .pkl)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if len(args.opts) % 2:
        print(f"error: config overrides come in KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"error: {e.name} is not installed: pip install -e '.[deploy]'", file=sys.stderr)
        return 2
    from bmc_detectron.deploy import export_onnx
    from bmc_detectron.deploy.verify import check_passed, describe_export

    try:
        meta = export_onnx(
            args.config_file, args.weights, args.output, args.opts, verify=not args.no_verify
        )
    except (ConfigError, OSError, ValueError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 2
    print(describe_export(meta, args.output))
    return 0 if check_passed(meta) else 1


if __name__ == "__main__":
    sys.exit(main())
