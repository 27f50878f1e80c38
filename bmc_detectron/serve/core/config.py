"""The web app's limits and defaults: :class:`ServeSettings` (pydantic-settings).

Every limit protects the workstation the app runs on: a request is refused (a 4xx / 503 JSON
error) before it can fill the memory or keep the model busy for everybody else.

Values come from the arguments, else from ``BMC_SERVE_<FIELD>`` environment variables (e.g.
``BMC_SERVE_MAX_JSON_BYTES``), else the defaults below; the serve tool passes its flags as
arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bmc_detectron.structures.differential import Lineage

MB = 1024 * 1024

#: where the JSON API's routes live (``/api/v1/analyze``, ...); a URL, so not a setting
API_V1_STR = "/api/v1"

# Host names a browser on the workstation itself uses; anything else is refused (a page from
# another site that re-points its own name at 127.0.0.1, "DNS rebinding", is turned away).
LOOPBACK_HOSTS: Tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


class ServeSettings(BaseSettings):
    """Limits and defaults of :func:`~bmc_detectron.serve.main.create_app`.

    Attributes:
        max_file_bytes: largest accepted image file (bytes).
        max_files: most images in one analyze request.
        max_pixels: largest accepted image (width x height), read from the file's header before
            anything is decoded (a small file can hold a huge image: a "decompression bomb").
        max_json_bytes: largest JSON body (the summary and CSV requests).
        workers: analyses that run at once (each in a worker thread, off the event loop).
        max_waiting: analyze requests admitted beyond those running; one more gets a 503.
        default_threshold: where the page's confidence slider starts.
        uncertain_below: a cell whose class probability is below it is *uncertain* (counted
            apart, in no percentage), as in the count tool's report.
        lineage: which classes are myeloid and which erythroid (the M:E ratio).
        preview_max_side: longest side of the JPEG preview the page draws the cells on.
        allowed_hosts: accepted ``Host`` header names (``("*",)``: any).
        secret_file: where the case pages' session key is kept (``BMC_SERVE_SECRET_FILE``;
            None: ``serve_secret`` beside an SQLite case database, else in the user's data
            folder); made on first start, mode 0600.
        login_max_failures: failed logins of one user name, or from one client address, after
            which further logins are refused (429) for the rest of ``login_window_s``; counted in
            the case database (``cases.logins``): shared by every server on it, kept over a
            restart.
        login_window_s: the window of the login rate limit (seconds).

    Invalid values raise ``ValueError`` naming the field.
    """

    model_config = SettingsConfigDict(
        env_prefix="BMC_SERVE_", frozen=True, extra="forbid", arbitrary_types_allowed=True
    )

    max_file_bytes: int = 25 * MB
    max_files: int = 16
    max_pixels: int = 64_000_000
    max_json_bytes: int = 16 * MB
    workers: int = 1
    max_waiting: int = 8
    default_threshold: float = 0.5
    uncertain_below: float = 0.5
    lineage: Lineage = Field(default_factory=Lineage)
    preview_max_side: int = 1600
    allowed_hosts: Tuple[str, ...] = LOOPBACK_HOSTS
    secret_file: Optional[Path] = None
    login_max_failures: int = 5
    login_window_s: float = 15 * 60.0

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ValueError(_messages(e)) from None

    @model_validator(mode="after")
    def _check_ranges(self) -> ServeSettings:
        positive = ("max_file_bytes", "max_files", "max_pixels", "max_json_bytes", "workers")
        positive += ("login_max_failures",)
        for name in (*positive, "preview_max_side"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.login_window_s <= 0:
            raise ValueError(f"login_window_s must be > 0, got {self.login_window_s}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")
        for name in ("default_threshold", "uncertain_below"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        return self

    @property
    def max_request_bytes(self) -> int:
        """Largest analyze request body: every file at its largest, plus the form's overhead."""
        return self.max_files * self.max_file_bytes + MB

    def limits(self) -> dict:
        """The limits as the model info panel and ``GET /api/v1/model`` show them."""
        return {
            "max_file_bytes": self.max_file_bytes,
            "max_files": self.max_files,
            "max_pixels": self.max_pixels,
            "max_request_bytes": self.max_request_bytes,
            "workers": self.workers,
            "max_waiting": self.max_waiting,
        }


def _messages(error: ValidationError) -> str:
    """One line per problem: the range checks' own words, else ``field: pydantic's message``."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in item["loc"])
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
