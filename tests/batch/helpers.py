"""Stand-ins for the batch tests: cases of disc fields and a picklable counter factory.

The factory builds the stand-in counter of ``tests/pipeline/helpers.py`` (disc detector, colour
classifier) in each worker. It can log every field a worker counts (one line per detector call,
appended to a file all workers share) and kill its own worker process (SIGKILL, as the kernel's
OOM killer or an operator would) at its ``die_at``-th field, once per batch: the first worker to
create the ``die_marker`` file dies, later ones (and the restarted one) do not.
"""

from __future__ import annotations

import os
import signal
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from bmc_detectron.pipeline import CellCounter, Detections
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from tests.pipeline.helpers import DiscDetector, channel_classifier, disc_field

CLASSES = "ABC"


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


class LoggingDetector(DiscDetector):
    """The disc detector, logging each call and dying (SIGKILL) at its ``die_at``-th call when
    it is the first to create ``die_marker``."""

    def __init__(self, log: Optional[str], die_marker: Optional[str], die_at: int) -> None:
        super().__init__()
        self.log, self.die_marker, self.die_at = log, die_marker, die_at

    def __call__(self, image: np.ndarray) -> Detections:
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{os.getpid()} {zlib.crc32(image.tobytes())}\n")
        if self.die_marker and len(self.calls) + 1 == self.die_at:
            try:
                os.close(os.open(self.die_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(image)


@dataclass(frozen=True)
class StandInFactory:
    """Builds the stand-in counter (a :data:`~bmc_detectron.batch.jobs.CounterFactory`)."""

    log: Optional[str] = None
    die_marker: Optional[str] = None
    die_at: int = 2
    fail: bool = False

    def __call__(self) -> Tuple[CellCounter, ScaleSetup]:
        if self.fail:
            raise FileNotFoundError("det.pth: no such file")
        detector = LoggingDetector(self.log, self.die_marker, self.die_at)
        return CellCounter(detector, channel_classifier()), ScaleSetup()


def logged_calls(log: Path) -> List[Tuple[int, int]]:
    """(pid, CRC-32 of the image) per logged detector call."""
    lines = log.read_text().split() if log.exists() else []
    return [(int(p), int(s)) for p, s in zip(lines[::2], lines[1::2])]
