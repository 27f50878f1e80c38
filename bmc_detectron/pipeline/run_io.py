"""The files of a counting run: the output folder's state and the input fields.

The report folder's layout and its finished / interrupted states are described in
:mod:`bmc_detectron.pipeline.run`; this module holds the file names, the state checks, the run's
fingerprint and the reading of the input images (EXIF orientation applied; unreadable inputs are
:class:`SkippedInput` with the reason).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from PIL import Image, ImageOps

from bmc_detectron.utils.io import (
    IMAGE_SUFFIXES,
    is_partial_write,
    remove_partial_writes,
    write_json_atomic,
)

STATE_FILE = "run.json"
SUMMARY_FILE = "summary.json"
RESULTS_DIR = "cells"
DRAWINGS_DIR = "fields"
REPORT_FILES = (SUMMARY_FILE, "report.html", "counts.csv", "cells.csv")


class OutputExistsError(RuntimeError):
    """The output folder holds a finished report (or other files) and overwrite was not given."""


class SkippedInput(Exception):
    """An input file that is not a readable image; the message is the reason."""


def run_fingerprint(settings: Dict[str, Any]) -> str:
    """SHA-256 of the settings that decide a field's cells (canonical JSON)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def field_names(paths: Sequence[Path]) -> List[str]:
    """A file-name-safe, unique name per input: its stem, + a path hash when stems collide."""
    stems = [re.sub(r"[^A-Za-z0-9._-]", "_", p.stem) or "field" for p in paths]
    repeated = {s for s, n in Counter(stems).items() if n > 1}
    return [
        f"{s}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}" if s in repeated else s
        for s, p in zip(stems, paths)
    ]


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR image from a file's bytes (EXIF orientation applied).

    Raises :class:`SkippedInput` with the reason when the bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            image = convert_PIL_to_numpy(ImageOps.exif_transpose(img), "BGR")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"): leave that out
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e)) or type(e).__name__
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise SkippedInput(f"not an image file ({suffix or 'no suffix'}): {why}") from None
        raise SkippedInput(f"unreadable image: {why}") from None
    return np.ascontiguousarray(image)


def check_output(output: Path, overwrite: bool) -> str:
    """The folder's state: "finished", "unfinished", "foreign" (other files) or "new".

    Raises :class:`OutputExistsError` for "finished" and "foreign" unless ``overwrite``.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"{output} is a file, not a report folder")
    if (output / SUMMARY_FILE).exists():
        state = "finished"
    elif (output / STATE_FILE).exists():
        state = "unfinished"
    elif output.is_dir() and any(not is_partial_write(p) for p in output.iterdir()):
        state = "foreign"  # a killed write's temp file alone (e.g. of run.json) is not
    else:
        state = "new"
    if state == "finished" and not overwrite:
        raise OutputExistsError(
            f"{output} holds a finished report ({SUMMARY_FILE}); pass --overwrite to replace it"
        )
    if state == "foreign" and not overwrite:
        raise OutputExistsError(
            f"{output} is not empty and holds no count run; pass --overwrite to write into it"
        )
    return state


def prepare_output(output: Path, fingerprint: str, overwrite: bool) -> str:
    """Check the output folder (see the module doc), clear a finished report when overwriting and
    write ``run.json``; returns the folder's state before (:func:`check_output`)."""
    state = check_output(output, overwrite)
    for folder in (output, output / RESULTS_DIR, output / DRAWINGS_DIR):
        remove_partial_writes(folder)  # left by a run killed mid-write
    if state == "finished":
        for name in REPORT_FILES:  # summary.json first: from here on the run is unfinished
            (output / name).unlink(missing_ok=True)
        for drawing in (output / DRAWINGS_DIR).glob("*.png"):
            drawing.unlink()
    write_state(output, fingerprint)
    return state


def write_state(output: Path, fingerprint: str) -> None:
    """Write ``run.json`` (the run's fingerprint and start time)."""
    run_state = {"fingerprint": fingerprint, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json_atomic(run_state, output / STATE_FILE, indent=1)


def image_shape(path: Path) -> Optional[Tuple[int, int]]:
    """(height, width) of an image file from its header (None: not a readable image)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return height, width


def read_bytes(path: Path) -> Optional[bytes]:
    """The file's bytes (None: unreadable)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def read_field(path: Path) -> Optional[np.ndarray]:
    """The field as a BGR image (None: unreadable or not an image)."""
    raw = read_bytes(path)
    try:
        return None if raw is None else decode_image(raw, path)
    except SkippedInput:
        return None
