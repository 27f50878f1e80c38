"""Table cells and GitHub markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bmc_detectron.utils.io import atomic_write_text


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table, without a trailing newline (string cells as they are, other
    cells through :func:`fmt`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |")
    return "\n".join(lines)


def append_markdown_row(path: Path, headers: Sequence[str], row: str) -> None:
    """Append ``row`` to the markdown table in ``path`` (header first for a new file); the file
    is rewritten atomically."""
    old = path.read_text() if path.is_file() else ""
    if not old.strip():
        old = markdown_table(headers, []) + "\n"
    atomic_write_text(path, old + row + "\n")
