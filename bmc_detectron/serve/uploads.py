"""A multipart/form-data reader that keeps uploads in memory and refuses them as they arrive.

Starlette's form parser spools large files to disk; this one holds every part in memory and
stops reading (413) as soon as a file, the number of files or the whole body passes its limit,
so a request never costs more memory than the limits allow and nothing is written to disk.
User file names are kept for display only (:func:`display_name`), never used as paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from bmc_detectron.serve.errors import ApiError

# Plain (non-file) form fields: a few short options.
MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def display_name(raw: str, index: int) -> str:
    """A file name fit to show: no folders, no control characters, at most 120 characters."""
    name = _UNSAFE.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:120] or f"image-{index + 1}"


@dataclass
class Upload:
    """One uploaded file, in memory: its position, display name, declared type and bytes."""

    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    """The files and the plain fields of a multipart form."""

    files: List[Upload] = field(default_factory=list)
    fields: Dict[str, str] = field(default_factory=dict)


class _Collector:
    """python-multipart callbacks that build a :class:`Form` under limits."""

    def __init__(self, max_files: int, max_file_bytes: int) -> None:
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.form = Form()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._content_type = b""
        self._data = bytearray()
        self._filename: Optional[str] = None
        self._field = ""

    def on_part_begin(self) -> None:
        self._disposition, self._content_type, self._data = b"", b"", bytearray()
        self._filename, self._field = None, ""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_FIELD_BYTES:
            raise ApiError(400, "bad_multipart", "a multipart header is too long")

    def on_header_end(self) -> None:
        name = self._header_name.lower()
        if name == b"content-disposition":
            self._disposition = self._header_value
        elif name == b"content-type":
            self._content_type = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._field = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.form.fields) >= MAX_FIELDS:
                raise ApiError(400, "bad_multipart", f"more than {MAX_FIELDS} form fields")
            return
        index = len(self.form.files)
        if index >= self.max_files:
            raise ApiError(
                413,
                "too_many_files",
                f"more than {self.max_files} files in one request; send them in smaller groups",
                max_files=self.max_files,
            )
        self._filename = display_name(options[b"filename"].decode("utf-8", "replace"), index)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if self._filename is None:
            if len(self._data) > MAX_FIELD_BYTES:
                raise ApiError(400, "bad_multipart", f"form field {self._field!r} is too long")
        elif len(self._data) > self.max_file_bytes:
            index = len(self.form.files)
            limit_mb = self.max_file_bytes / (1024 * 1024)
            raise ApiError(
                413,
                "file_too_large",
                f"{self._filename} is larger than the {limit_mb:g} MB limit per file",
                file=self._filename,
                index=index,
                max_file_bytes=self.max_file_bytes,
            )

    def on_part_end(self) -> None:
        if self._filename is None:
            self.form.fields[self._field] = self._data.decode("utf-8", "replace")
            return
        content_type = self._content_type.decode("latin-1").strip()
        index = len(self.form.files)
        self.form.files.append(Upload(index, self._filename, content_type, bytes(self._data)))
        self._data = bytearray()

    def callbacks(self) -> dict:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished")
        names += ("part_data", "part_end")
        return {f"on_{name}": getattr(self, f"on_{name}") for name in names}


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(
            415,
            "not_multipart",
            "send the images as multipart/form-data (form field 'files')",
        )
    return options[b"boundary"]


async def read_multipart(
    request: Request, *, max_files: int, max_file_bytes: int, max_request_bytes: int
) -> Form:
    """Read a multipart body into memory; :class:`ApiError` (400 / 413 / 415) past a limit."""
    boundary = _boundary(request)
    too_large = ApiError(
        413,
        "request_too_large",
        f"the request is larger than {max_request_bytes} bytes",
        max_request_bytes=max_request_bytes,
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_request_bytes:
        raise too_large
    collector = _Collector(max_files, max_file_bytes)
    parser = MultipartParser(boundary, collector.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_request_bytes:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({e})") from None
    return collector.form
