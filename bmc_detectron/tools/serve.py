"""Serve the lab web page and its JSON API on this workstation (``make serve``).

    bmc serve                       # the demo's ONNX models
    bmc serve --detector-onnx det.onnx --classifier-onnx cls.onnx
    bmc serve --backend torch \\
        --detector-config C --detector-weights W --classifier-config C2 --classifier-weights W2

Open http://127.0.0.1:8000 (the API is documented at /docs). The models default to what
``make demo`` writes under ``output/demo``; every path is also read from an environment variable
(``BMC_DETECTOR_ONNX``, ``BMC_CLASSIFIER_ONNX``, ``BMC_DETECTOR_CONFIG``, ...; a flag wins).
It listens on 127.0.0.1 only unless ``--host`` says otherwise. Each request's scale is found
as ``bmc count`` finds it unless the request gives ``microns_per_pixel``
(``--no-auto-scale``: requests are analysed as they are unless they ask with ``auto_scale``).

With the case database (``--db URL``, default as ``bmc cases``; created when empty) the page
opens on the case list: users log in (accounts: ``bmc cases add-user``), or, on a single-user
workstation bound to 127.0.0.1, ``--no-auth``. ``--no-cases``: the count page alone, no login
(anyone who can reach the port can use it).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bmc_detectron import counting
from bmc_detectron.config import ConfigError
from bmc_detectron.counting import CounterSpec
from bmc_detectron.evaluation.open_set import threshold_value
from bmc_detectron.pipeline.detector_view import DETECTOR_SCALE_TOLERANCE
from bmc_detectron.pipeline.scale_plan import ScaleOptions
from bmc_detectron.structures.differential import Lineage

DEMO = Path("output/demo")
# flag -> (environment variable, default)
PATHS: Dict[str, Tuple[str, Path]] = {
    "detector_onnx": ("BMC_DETECTOR_ONNX", DEMO / "onnx" / "detector.onnx"),
    "classifier_onnx": ("BMC_CLASSIFIER_ONNX", DEMO / "onnx" / "classifier.onnx"),
    "detector_config": ("BMC_DETECTOR_CONFIG", DEMO / "detector" / "config.yaml"),
    "detector_weights": ("BMC_DETECTOR_WEIGHTS", DEMO / "detector" / "model_final.pth"),
    "classifier_config": ("BMC_CLASSIFIER_CONFIG", DEMO / "classifier" / "config.yaml"),
    "classifier_weights": ("BMC_CLASSIFIER_WEIGHTS", DEMO / "classifier" / "model_final.pth"),
}


class SetupError(RuntimeError):
    """The models cannot be loaded as asked; the message says what to do."""


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (model paths default to the environment, then to the demo's)."""
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend",
        choices=("onnx", "torch"),
        default=env("BMC_BACKEND", "onnx"),
        help="ONNX Runtime (default) or PyTorch models",
    )
    for name, (var, default) in PATHS.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, default=env(var, str(default)), help=f"${var}, default {default}")
    p.add_argument("--no-classifier", action="store_true", help="count the detector's classes")
    p.add_argument(
        "--detector-opts", nargs="+", default=[], help="torch: detector config KEY VALUE"
    )
    p.add_argument("--classifier-opts", nargs="+", default=[], help="torch: classifier overrides")
    p.add_argument("--device", help="torch: cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, help="inference threads (default: the runtime's)")
    p.add_argument("--host", default=env("BMC_SERVE_HOST", "127.0.0.1"), help="bind address")
    p.add_argument("--port", type=int, default=int(env("BMC_SERVE_PORT", "8000")), help="port")
    p.add_argument("--allowed-host", action="append", help="accepted Host names (repeatable)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="cells scoring below are not counted until the page's slider is moved",
    )
    p.add_argument(
        "--score-floor",
        type=float,
        default=0.1,
        help="detections kept from this score: the page's slider goes down to it",
    )
    p.add_argument(
        "--uncertain-below", type=float, default=0.5, help="class probability below: uncertain"
    )
    p.add_argument(
        "--open-set-threshold",
        type=threshold_value,
        help="open-set score below: Other (default: the classifier's stored threshold; "
        "'off': no Other outcome)",
    )
    p.add_argument("--lineage", help="JSON/YAML file {myeloid: [...], erythroid: [...]}")
    p.add_argument("--myeloid", help="comma-separated myeloid classes (overrides --lineage)")
    p.add_argument("--erythroid", help="comma-separated erythroid classes (overrides --lineage)")
    p.add_argument(
        "--tile-size", type=int, default=1024, help="tile fields larger than this (0: never)"
    )
    p.add_argument("--tile-overlap", type=int, default=128, help="pixels shared by adjacent tiles")
    p.add_argument("--max-file-mb", type=float, default=25.0, help="largest image file (MB)")
    p.add_argument("--max-files", type=int, default=16, help="most images per request")
    p.add_argument("--max-megapixels", type=float, default=64.0, help="largest image (MP)")
    p.add_argument("--workers", type=int, default=1, help="analyses at once")
    p.add_argument("--max-waiting", type=int, default=8, help="queued requests; more get 503")
    p.add_argument("--log-level", default="info", help="uvicorn's log level")
    p.add_argument("--training-profile", help="default: training_profile.json beside the model")
    p.add_argument(
        "--detector-scale-tolerance",
        type=float,
        default=DETECTOR_SCALE_TOLERANCE,
        help="warn when the detector sees cells more than this factor from their training size",
    )
    cases = p.add_argument_group("case database (the case list, review and sign-off pages)")
    cases.add_argument("--db", default=None, help="SQLAlchemy URL (default as `bmc cases`)")
    cases.add_argument("--images", default=None, help="image store (default as `bmc cases`)")
    cases.add_argument("--no-cases", action="store_true", help="the count page alone, no database")
    cases.add_argument(
        "--no-auth",
        action="store_true",
        help="no login: a single-user workstation (127.0.0.1 only)",
    )
    cases.add_argument("--session-hours", type=float, default=8.0, help="a login lasts this long")
    cases.add_argument("--import-report", help="import this count report once (make serve: demo)")
    cases.add_argument("--import-case-id", default="demo", help="its case id (default: demo)")
    p.add_argument(
        "--auto-scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find each request's scale (files' pixel size, detector probe) unless it gives one; "
        "a request's auto_scale field overrides it",
    )
    return p


def _require(paths: Sequence[Tuple[str, str]]) -> None:
    missing = [f"{path} ({flag})" for flag, path in paths if not Path(path).is_file()]
    if missing:
        raise SetupError(
            "model file(s) not found: "
            + ", ".join(missing)
            + ". Run `make demo` first (it trains the demo models and writes them there), "
            "or point the flags / BMC_* environment variables at your models."
        )


def counter_spec(args: argparse.Namespace) -> CounterSpec:
    """The chosen backend's models, kept from ``--score-floor``; :class:`SetupError` when a
    model file is missing."""
    onnx = args.backend == "onnx"
    names = ["detector_onnx", "classifier_onnx"] if onnx else list(PATHS)[2:]
    if args.no_classifier:
        names = [n for n in names if "classifier" not in n]
    files = [(n, getattr(args, n)) for n in names]
    _require([("--" + n.replace("_", "-"), path) for n, path in files])
    if onnx:
        _require([(f"sidecar of --{n.replace('_', '-')}", f"{path}.json") for n, path in files])
    return CounterSpec(
        backend=args.backend,
        detector_opts=tuple(args.detector_opts),
        classifier_opts=tuple(args.classifier_opts),
        training_profile=args.training_profile,
        device=args.device,
        threads=args.threads,
        score_threshold=args.score_floor,
        open_set_threshold=args.open_set_threshold,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        **dict(files),
    )


def build_counter(spec: CounterSpec) -> Any:
    """The counter; :class:`SetupError` when the ONNX backend lacks onnxruntime."""
    try:
        return counting.build_counter(spec)
    except ImportError as e:  # onnxruntime missing
        raise SetupError(f"{e}: install the deploy extras (pip install -e .[deploy])") from e


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_settings(args: argparse.Namespace) -> Any:
    """:class:`~bmc_detectron.serve.ServeSettings` from the arguments."""
    from bmc_detectron.serve.core.config import LOOPBACK_HOSTS, ServeSettings

    if args.allowed_host:
        hosts = tuple(args.allowed_host)
    elif is_loopback(args.host):
        hosts = LOOPBACK_HOSTS
    else:
        hosts = ("*",)
    return ServeSettings(
        max_file_bytes=int(args.max_file_mb * 1024 * 1024),
        max_files=args.max_files,
        max_pixels=int(args.max_megapixels * 1e6),
        workers=args.workers,
        max_waiting=args.max_waiting,
        default_threshold=max(args.score_threshold, args.score_floor),
        uncertain_below=args.uncertain_below,
        lineage=Lineage.from_options(args.lineage, args.myeloid, args.erythroid),
        allowed_hosts=hosts,
    )


def model_files(args: argparse.Namespace) -> Dict[str, Optional[str]]:
    """The model files in use, for the page's model panel."""
    keys = ("detector_onnx", "classifier_onnx") if args.backend == "onnx" else tuple(PATHS)[2:]
    return {k: None if args.no_classifier and "classifier" in k else getattr(args, k) for k in keys}


def main(argv: Optional[List[str]] = None) -> int:
    """Load the models and serve until interrupted; returns the exit status (2: set-up error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from bmc_detectron.serve import create_app
    except ImportError as e:
        print(f"error: {e}: install the serve extras (pip install -e .[serve])", file=sys.stderr)
        return 2
    try:
        settings = build_settings(args)
        spec = counter_spec(args)
        counter = build_counter(spec)
        options = ScaleOptions(
            auto=args.auto_scale, detector_scale_tolerance=args.detector_scale_tolerance
        )
        scale = counting.scale_setup(spec, counter, options, per_request=True)
    except (SetupError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    db = auth = None
    if not args.no_cases:
        from bmc_detectron.serve.case_setup import (
            CasesSetupError,
            auth_mode,
            import_once,
            open_cases,
        )

        try:
            db = open_cases(args.db, args.images)
            loopback, hours = is_loopback(args.host), args.session_hours
            auth, how = auth_mode(db, args.no_auth, loopback, hours, settings.secret_file)
            if args.import_report:
                print(import_once(db, args.import_report, args.import_case_id))
        except (CasesSetupError, ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"case database {db}: {how}")
    elif not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: the count page has no login; anyone who can "
            "reach this port can upload images to it",
            file=sys.stderr,
        )
    app = create_app(counter, {"files": model_files(args)}, settings, scale, db, auth)
    print(f"serving on http://{args.host}:{args.port} (API documentation: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
