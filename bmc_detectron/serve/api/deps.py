"""What the routes are given, through FastAPI dependencies: each one app's own objects.

:func:`~bmc_detectron.serve.main.create_app` puts them on ``app.state``; a route declares the
ones it needs as parameters (``counter: CounterDep``). None of them adds a request parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Dict

from fastapi import Depends, Request

from bmc_detectron.pipeline.counter import CellCounter
from bmc_detectron.pipeline.scale_plan import ScaleSetup
from bmc_detectron.serve.core.config import ServeSettings
from bmc_detectron.serve.gate import InferenceGate


def get_counter(request: Request) -> CellCounter:
    """The app's cell counter."""
    return request.app.state.counter


def get_settings(request: Request) -> ServeSettings:
    """The app's limits and defaults."""
    return request.app.state.settings


def get_gate(request: Request) -> InferenceGate:
    """The app's inference gate (how many analyses run and wait)."""
    return request.app.state.gate


def get_scale(request: Request) -> ScaleSetup:
    """The model's scale and training profile."""
    return request.app.state.scale


def get_model_payload(request: Request) -> Dict[str, Any]:
    """What ``GET /api/v1/model`` answers: models, classes, fingerprint, settings."""
    return request.app.state.model_payload


CounterDep = Annotated[CellCounter, Depends(get_counter)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
GateDep = Annotated[InferenceGate, Depends(get_gate)]
ScaleDep = Annotated[ScaleSetup, Depends(get_scale)]
ModelPayloadDep = Annotated[Dict[str, Any], Depends(get_model_payload)]
