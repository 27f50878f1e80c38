"""Helpers of the web app's tests: a tiny random counter, test images, a server in a thread.

The counter is a seeded random ``retinanet_R_18_FPN_cpu`` (short side 96, 11 marrow classes)
whose classification bias is lowered and weights spread so that its scores cover roughly
0.15 - 0.7 (the confidence slider has something to filter), and a stand-in crop classifier: a
fixed random projection of each standardised 16 px crop onto the 11 marrow classes.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from detectron2.modeling import build_model
from PIL import Image

from bmc_detectron.config import build_cfg
from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.data.synthetic import generate_image
from bmc_detectron.pipeline import CellClassifier, CellCounter, Detector
from tests.helpers import CONFIGS

DET_CONFIG = str(CONFIGS / "cpu" / "retinanet_R_18_FPN_cpu.yaml")
DET_OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]
DET_OPTS += ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.1", "TEST.DETECTIONS_PER_IMAGE", "40"]
MIN_SCORE = 0.1


class RandomProjectionModel(torch.nn.Module):
    """``predict_crops``: softmax of a fixed random projection of each standardised crop."""

    def __init__(self, num_classes: int, crop_size: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dims = 3 * crop_size * crop_size
        self.weight = torch.randn(dims, num_classes, generator=gen) * (4.0 / dims**0.5)

    def predict_crops(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.float().flatten(1)
        x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1.0)
        return torch.softmax(x @ self.weight, dim=1)


def tiny_detector(seed: int = 0) -> Detector:
    """The seeded random detector (scores spread over about 0.15 - 0.7)."""
    cfg = build_cfg(DET_CONFIG, ["MODEL.DEVICE", "cpu", *DET_OPTS])
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.cls_score.weight, std=0.4)
        model.head.cls_score.bias.fill_(-5.0)
    return Detector(
        model=model,
        class_names=list(MARROW_ABBRS),
        min_size=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size=int(cfg.INPUT.MAX_SIZE_TEST),
        identity={"weights_sha256": f"random-seed-{seed}"},
        source={"config": DET_CONFIG, "weights": "(random, seeded)"},
    )


def save_tiny_detector(path: Path) -> Path:
    """The weights of :func:`tiny_detector` as a ``.pth`` (load with DET_CONFIG + DET_OPTS)."""
    torch.save({"model": tiny_detector().model.state_dict()}, path)
    return path


def marrow_classifier() -> CellClassifier:
    """The stand-in classifier of the 11 marrow classes."""
    return CellClassifier(
        RandomProjectionModel(len(MARROW_ABBRS), 16),
        list(MARROW_ABBRS),
        crop_size=16,
        crop_margin=0.1,
        identity={"weights_sha256": "stand-in"},
        source={"config": "(stand-in)", "weights": "(stand-in)"},
    )


def tiny_counter(classifier: bool = True) -> CellCounter:
    """Detector + (optionally) the stand-in classifier, keeping detections from MIN_SCORE."""
    return CellCounter(
        tiny_detector(), marrow_classifier() if classifier else None, score_threshold=MIN_SCORE
    )


def encode(image_rgb: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    """An RGB array encoded as an image file."""
    buf = io.BytesIO()
    Image.fromarray(image_rgb).save(buf, format=fmt, **params)
    return buf.getvalue()


def smear(height: int, width: int, seed: int) -> np.ndarray:
    """A synthetic marrow smear (RGB)."""
    return generate_image(np.random.default_rng(seed), height, width, (6, 10))[0]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(app, port: Optional[int] = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def visible_cells(field: dict, min_score: float, excluded: Sequence[str] = ()) -> list:
    """The cells of an analysed field that the page shows at ``min_score``."""
    return [c for c in field["cells"] if c["det_score"] >= min_score and c["label"] not in excluded]
