"""Where data lives: one setting for the real (shared) data, one for generated data."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "BMC_SHARED_DATASETS"
DATASETS_ENV = "BMC_DATASETS"


def shared_datasets_root() -> Path:
    """Read-only real datasets: ``$BMC_SHARED_DATASETS``, default ``../shared/datasets``."""
    return Path(os.environ.get(SHARED_ENV, "../shared/datasets")).expanduser().resolve()


def datasets_root() -> Path:
    """Generated / converted data (git-ignored): ``$BMC_DATASETS``, default ``./datasets``."""
    return Path(os.environ.get(DATASETS_ENV, "datasets")).expanduser().resolve()
