"""Stand-ins for the batch tests: cases of disc fields and a picklable counter factory.

The factory builds the stand-in counter of ``tests/pipeline/helpers.py`` (disc detector, colour
classifier) in each worker, or with ``slides`` the slide count's (``tests/slides/helpers.py``: the
nucleus detector, fields of :data:`SLIDE_FIELD` px overlapping by :data:`SLIDE_OVERLAP`).
It can log every field a worker counts (one line per detector call,
appended to a file all workers share) and kill its own worker process (SIGKILL, as the kernel's
OOM killer or an operator would) at its ``die_at``-th field, once per batch: the first worker to
create the ``die_marker`` file dies, later ones (and the restarted one) do not. On a Ray cluster
(``hold_node``) the worker on that node instead writes its node id into the marker and waits
there, to be lost with its node; ``meet`` holds each worker's first call until ``meet_nodes``
workers on different nodes have made theirs (so that every node gets a case).
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from tests.pipeline.helpers import DiscDetector, channel_classifier, disc_field
from tests.slides.helpers import NucleusDetector

CLASSES = "ABC"
SLIDE_FIELD, SLIDE_OVERLAP = 256, 64


def write_cases(root: Path, n_cases: int = 3, n_fields: int = 3) -> Path:
    """``root`` with ``n_cases`` case folders of ``n_fields`` disc fields each, all different."""
    for c in range(n_cases):
        folder = root / f"case{c:02d}"
        folder.mkdir(parents=True)
        for f in range(n_fields):
            rng = np.random.default_rng(100 * c + f)
            jitter = rng.integers(-3, 4, 4)
            discs = [
                (16 + 32 * i + jitter[i], 24 + 28 * (i % 2), 9, CLASSES[(c + f + i) % 3])
                for i in range(2 + (c + f) % 3)
            ]
            image, _ = disc_field(64, 128, discs)
            cv2.imwrite(str(folder / f"field{f}.png"), image)
    return root


def ray_node() -> str:
    """The Ray node id of this worker process."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _meet(folder: Path, nodes: int, wait_s: float = 30.0) -> None:
    """Sign in ``folder`` with this worker's node; wait (at most ``wait_s``) for ``nodes``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ray_node()).touch()
    deadline = time.monotonic() + wait_s
    while len(list(folder.iterdir())) < nodes and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass(frozen=True)
class CallHook:
    """Logs each detector call and kills the process (SIGKILL) at its ``die_at``-th call when
    it is the first to create ``die_marker`` (see the module doc for ``hold_node``, ``meet``)."""

    log: Optional[str]
    die_marker: Optional[str]
    die_at: int
    hold_node: Optional[str] = None
    meet: Optional[str] = None
    meet_nodes: int = 2

    def __call__(self, image: np.ndarray, call: int) -> None:
        if self.meet and call == 1:
            _meet(Path(self.meet), self.meet_nodes)
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{os.getpid()} {zlib.crc32(image.tobytes())}\n")
        if self.hold_node and call == self.die_at and ray_node() == self.hold_node:
            Path(str(self.die_marker)).write_text(self.hold_node)
            time.sleep(120)  # until the test removes this node (and this process with it)
        elif self.die_marker and not self.hold_node and call == self.die_at:
            try:
                os.close(os.open(self.die_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)


class LoggingDetector(DiscDetector):
    """The disc detector, its calls hooked (:class:`CallHook`)."""

    def __init__(self, hook: CallHook) -> None:
        super().__init__()
        self.hook = hook

    def __call__(self, image: np.ndarray) -> Detections:
        self.hook(image, len(self.calls) + 1)
        return super().__call__(image)


class LoggingNucleusDetector(NucleusDetector):
    """The slides' nucleus detector, its calls hooked (:class:`CallHook`)."""

    def __init__(self, hook: CallHook) -> None:
        super().__init__()
        self.hook = hook

    def __call__(self, image: np.ndarray) -> Detections:
        self.hook(image, len(self.calls) + 1)
        return super().__call__(image)


@dataclass(frozen=True)
class StandInFactory:
    """Builds the stand-in counter (a :data:`~bmc_detectron.batch.jobs.CounterFactory`)."""

    log: Optional[str] = None
    die_marker: Optional[str] = None
    die_at: int = 2
    fail: bool = False
    slides: bool = False
    hold_node: Optional[str] = None
    meet: Optional[str] = None

    def __call__(self) -> Tuple[CellCounter, ScaleSetup]:
        if self.fail:
            raise FileNotFoundError("det.pth: no such file")
        hook = CallHook(self.log, self.die_marker, self.die_at, self.hold_node, self.meet)
        if self.slides:
            detector = LoggingNucleusDetector(hook)
            return CellCounter(detector, tile_size=0, tile_overlap=SLIDE_OVERLAP), ScaleSetup()
        return CellCounter(LoggingDetector(hook), channel_classifier()), ScaleSetup()


def logged_calls(log: Path) -> List[Tuple[int, int]]:
    """(pid, CRC-32 of the image) per logged detector call."""
    lines = log.read_text().split() if log.exists() else []
    return [(int(p), int(s)) for p, s in zip(lines[::2], lines[1::2])]
