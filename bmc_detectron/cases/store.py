"""The fields' images, stored once each by content: ``<root>/<sha[:2]>/<sha><suffix>``.

A file is written atomically and never changed; storing the same bytes again (another case, a
re-import) finds it there and writes nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from bmc_detectron.utils.io import atomic_write_bytes

_SHA = re.compile(r"[0-9a-f]{64}")
_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


class ImageStore:
    """A content-addressed folder of images."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def relpath(self, sha256: str, suffix: str) -> str:
        """The image's path relative to the root (checked: no way out of the store)."""
        suffix = suffix.lower()
        if not _SHA.fullmatch(sha256) or not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"not a stored image name: {sha256!r}{suffix!r}")
        return f"{sha256[:2]}/{sha256}{suffix}"

    def path(self, sha256: str, suffix: str) -> Path:
        """Where the image with this hash lies (whether or not it is there)."""
        return self.root / self.relpath(sha256, suffix)

    def put(self, data: bytes, suffix: str) -> str:
        """Store ``data`` (once); returns its SHA-256."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha, suffix)
        if not path.is_file():
            atomic_write_bytes(path, data)
        return sha

    def get(self, sha256: str, suffix: str) -> bytes:
        """The stored bytes; FileNotFoundError names the missing file."""
        return self.path(sha256, suffix).read_bytes()
