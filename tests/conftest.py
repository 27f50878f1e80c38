"""Shared fixtures. Helpers (tiny configs, inputs, layouts) are in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import bmc_detectron  # noqa: F401  (registers the components)
from bmc_detectron.data.paths import shared_datasets_root

torch.set_num_threads(int(os.environ.get("BMC_TEST_THREADS", "1")))


@pytest.fixture
def shared_root() -> Path:
    """``$BMC_SHARED_DATASETS`` (default ../shared/datasets); skips, naming it, when absent."""
    root = shared_datasets_root()
    if not (root / "bccd").is_dir():
        pytest.skip(f"shared datasets not found at {root}: set BMC_SHARED_DATASETS to their folder")
    return root
