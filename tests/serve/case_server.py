"""A case server in its own process (``python -m tests.serve.case_server DB_URL PORT [IMAGES]``):
the tiny counter, the case database (its image store ``IMAGES``, default as ``CaseDB``'s), login
on; the reliability test kills it mid-review."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from bmc_detectron.cases.db import CaseDB
from tests.serve.case_helpers import case_app
from tests.serve.helpers import tiny_counter

if __name__ == "__main__":
    url, port = sys.argv[1], int(sys.argv[2])
    images = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    app = case_app(tiny_counter(), CaseDB(url, images), hosts=("127.0.0.1",))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
