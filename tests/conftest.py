"""Shared fixtures. Helpers (tiny configs, inputs, layouts) are in ``helpers.py``."""

from __future__ import annotations

import logging
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


@pytest.fixture
def pbc_datasets(shared_root, tmp_path, monkeypatch):
    """The built-in datasets registered with generated data under ``tmp_path / "datasets"``
    (``$BMC_DATASETS``), registered back as they were afterwards; skips without the PBC cells."""
    if not (shared_root / "pbc_wbc" / "val" / "labels").is_dir():
        pytest.skip(f"{shared_root / 'pbc_wbc'} not found: set BMC_SHARED_DATASETS")
    from bmc_detectron.data.datasets import register_builtin_datasets

    generated = tmp_path / "datasets"
    monkeypatch.setenv("BMC_DATASETS", str(generated))
    register_builtin_datasets()
    yield generated
    monkeypatch.undo()
    register_builtin_datasets()


# The loggers the project's commands set up with detectron2's ``setup_logger`` (propagate off).
OWN_LOGGERS = ("bmc_detectron", "detectron2")


def _all_loggers() -> list:
    named = [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    return [logging.getLogger(), *named]


@pytest.fixture(autouse=True)
def _restore_logging_handlers():
    """Take back the handlers a test's in-process command added to any logger (detectron2's
    ``setup_logger`` or ``logging.basicConfig`` bound to that test's captured stdout / stderr,
    which is closed after it: a later test's log record would hit a closed stream), and the
    ``propagate`` flag it switched off (a later test's ``caplog`` would see nothing). The
    project's own loggers always propagate again afterwards, also when a module-scoped fixture
    ran the command before this test's snapshot."""
    before = {id(lg): (list(lg.handlers), lg.propagate) for lg in _all_loggers()}
    yield
    for lg in _all_loggers():
        kept, propagate = before.get(id(lg), ([], True))
        for handler in lg.handlers[:]:
            if handler not in kept:
                lg.removeHandler(handler)
        lg.propagate = propagate
    for name in OWN_LOGGERS:
        logging.getLogger(name).propagate = True
