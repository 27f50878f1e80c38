"""The API's JSON shapes (pydantic models): they validate requests and document the API."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Field

# A field's cells and a case's fields are bounded so that a JSON body stays small.
MAX_CELLS_PER_FIELD = 20000
MAX_FIELDS_PER_CASE = 2000


class CellModel(BaseModel):
    """One cell: its box in field pixels, detector score and class, class and probabilities."""

    box: List[float] = Field(min_length=4, max_length=4, description="x0, y0, x1, y1 (pixels)")
    det_score: float = Field(ge=0, le=1, description="the detector's score")
    det_class: str = Field(max_length=100, description="the detector's class")
    label: str = Field(max_length=100, description="the cell's class")
    prob: float = Field(ge=0, le=1, description="probability of the class")
    probs: Optional[List[float]] = Field(
        None, max_length=1000, description="every class's probability (with a classifier)"
    )


class FieldModel(BaseModel):
    """One analysed field, as ``POST /api/v1/analyze`` returns it (the preview left out)."""

    name: str = Field(max_length=200, description="a safe name made from the file name")
    filename: str = Field(max_length=200, description="the uploaded file's name, for display")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    sha256: str = Field("", max_length=64, description="SHA-256 of the uploaded bytes")
    tiles: int = Field(1, ge=0, description="tiles the field was detected in")
    detect_s: float = Field(0.0, ge=0)
    recognise_s: float = Field(0.0, ge=0)
    cells: List[CellModel] = Field(max_length=MAX_CELLS_PER_FIELD)


class AnalyzedField(FieldModel):
    """A field in the analyze response: the cells, timings and (if asked for) a preview."""

    format: str = Field(description="the image format found by decoding (PNG, JPEG, ...)")
    decode_s: float
    preview: Optional[str] = Field(None, description="a JPEG data: URI of the field, if asked")
    rbc_diameter_px: Optional[float] = Field(
        None, description="the field's red-cell diameter (with a training profile)"
    )
    flags: List[str] = Field(
        default_factory=list,
        description="why the field lies outside the training data (colour, scale); [] if not "
        "or not checked (no training profile)",
    )


class AnalyzeResponse(BaseModel):
    """``POST /api/v1/analyze``: one entry per uploaded image, in upload order."""

    fields: List[AnalyzedField]
    class_names: List[str]
    fingerprint: str = Field(description="identifies the models and settings that counted")
    timing: Dict[str, float] = Field(
        description="read_s (upload), queue_s (waiting for a worker), analyze_s, total_s"
    )
    scale: Dict[str, Any] = Field(
        default_factory=dict,
        description="the scale used (source given / none, microns_per_pixel, the factor the "
        "fields were resized by before detection, the model's scale), the size at which the "
        "detector saw each field (detector_input) and warnings (sentences; with codes in "
        "warning_codes)",
    )


class SummaryRequest(BaseModel):
    """A case's fields and what the page shows of them: the differential of the visible cells."""

    fields: List[FieldModel] = Field(max_length=MAX_FIELDS_PER_CASE)
    min_score: float = Field(0.0, ge=0, le=1, description="cells scoring below are left out")
    excluded_classes: List[str] = Field(
        default_factory=list, max_length=1000, description="classes switched off (left out)"
    )
    uncertain_below: Optional[float] = Field(
        None, ge=0, le=1, description="class probability below: uncertain (default: server's)"
    )
    case: str = Field("", max_length=200, description="the case's name, for the report")


class ErrorBody(BaseModel):
    """What every error response holds under ``error``."""

    status: int
    code: str = Field(description="a stable word: not_an_image, file_too_large, busy, ...")
    message: str
    file: Optional[str] = None
    index: Optional[int] = None


class ErrorResponse(BaseModel):
    """An error response."""

    error: ErrorBody


ERROR_RESPONSES: Dict[int, Dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "empty upload, no file, malformed form, a microns_per_pixel that is not a number",
        413: "file, request or image (pixels) too large, or too many files",
        415: "not an image / not a multipart form",
        422: "an image that cannot be decoded, an invalid JSON body, or a microns_per_pixel "
        "for a model whose scale is unknown",
        503: "the analyser is busy (retry after the Retry-After seconds)",
    }.items()
}
