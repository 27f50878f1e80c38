"""File output and input helpers used across the package.

Every file the package writes goes through :func:`atomic_write_bytes` (or its text/JSON/image
wrappers): a temp file in the same folder, fsync, rename. An existing file is only ever replaced
by a complete new one; a failure or a kill half-way leaves the old file as it was.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# Image file endings the tools accept when they are given a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


_PARTIAL_WRITE = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def is_partial_write(path: PathLike) -> bool:
    """Whether ``path`` is the temp file of an :func:`atomic_write_bytes` whose process was
    killed before its rename (``.<name>.<8 random characters>.tmp``)."""
    return _PARTIAL_WRITE.fullmatch(Path(path).name) is not None


def remove_partial_writes(folder: PathLike) -> int:
    """Delete the temp files killed atomic writes left in ``folder`` (not below); returns how
    many. Call it only where no other process writes into ``folder``."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if is_partial_write(p)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: object) -> object:
    """``value`` with NaN / inf floats as None, tuples as lists and dict keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def write_json_atomic(obj: object, path: PathLike, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; NaN is written as null."""
    return atomic_write_bytes(path, json.dumps(json_safe(obj), indent=indent).encode())


def write_png_atomic(path: PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) RGB or (H, W) uint8 array as PNG atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def shown_path(path: PathLike) -> str:
    """``path`` relative to the working directory when it lies below it (as a command or page
    names a repository path), else as given."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_images(folder: PathLike) -> List[Path]:
    """The image files directly in ``folder`` (by :data:`IMAGE_SUFFIXES`), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(inputs: Union[str, Sequence[str], Iterable[str]]) -> List[Path]:
    """Files, folders (their images, sorted) and glob patterns -> a de-duplicated list.

    Raises FileNotFoundError naming the item that matched nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    paths: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += list_images(p)
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching pattern")
            paths += matches
    return list(dict.fromkeys(paths))
