"""The lab web page and its JSON API around the cell counter (``pip install -e .[serve]``).

- :func:`~.app.create_app` builds the FastAPI app around any
  :class:`~bmc_detectron.pipeline.CellCounter` (PyTorch or ONNX Runtime models);
- :class:`~.settings.ServeSettings` holds its limits (upload size, files, pixels, queue);
- ``python -m bmc_detectron.tools.serve`` (``make serve``) runs it on 127.0.0.1:8000.

FastAPI, uvicorn and python-multipart are imported only by this package.
"""

from bmc_detectron.serve.app import create_app
from bmc_detectron.serve.model_info import describe_counter
from bmc_detectron.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "describe_counter"]
