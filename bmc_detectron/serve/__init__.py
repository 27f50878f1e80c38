"""The lab web page and its JSON API around the cell counter (``pip install -e .[serve]``).

Laid out as FastAPI's full-stack template (backend/app):

- :func:`~.main.create_app` (``main.py``) builds the FastAPI app around any
  :class:`~bmc_detectron.pipeline.CellCounter` (PyTorch or ONNX Runtime models);
- ``api/routes/``: one module per resource (pages, health, model, analyze, reports);
  ``api/deps.py``: what a route is given (counter, settings, gate, scale, model description);
  ``api/main.py``: the routers under ``/api/v1``;
- ``core/config.py``: :class:`~.core.config.ServeSettings`, the limits (upload size, files,
  pixels, queue) through pydantic-settings;
- beside them what the routes use: reading uploads (``uploads``, ``images``), analysing them
  (``analysis``, ``gate``), describing the models (``model_info``), the JSON shapes
  (``schemas``), errors and the request guard (``errors``, ``middleware``);
- ``python -m bmc_detectron.tools.serve`` (``make serve``) runs it on 127.0.0.1:8000.

FastAPI, uvicorn and python-multipart are imported only by this package.
"""

from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.serve.main import create_app
from bmc_detectron.serve.model_info import describe_counter

__all__ = ["ServeSettings", "create_app", "describe_counter"]
