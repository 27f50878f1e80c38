"""Writing a study's results page: text assembled in Python from the files the study's commands
wrote (the shell drivers only run commands), figures copied beside the page.

:class:`PageText` keeps the shell's semantics of the page builders it replaced: :meth:`line` is
``echo``, :meth:`file` is ``cat`` (or ``tail -n +N`` with ``from_line``), so that a page built
from the same inputs is the same text.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import List

from bmc_detectron.utils.io import atomic_write_text


def today() -> str:
    """The date a page is generated on (``date -I``)."""
    return datetime.date.today().isoformat()


def tail(path: str | Path, from_line: int = 1) -> str:
    """The text of ``path`` from its line ``from_line`` on (1: all of it), as ``tail -n +N``."""
    lines = Path(path).read_text().splitlines(keepends=True)
    return "".join(lines[from_line - 1 :])


class PageText:
    """A page assembled line by line and file by file."""

    def __init__(self) -> None:
        self.parts: List[str] = []

    def line(self, *lines: str) -> PageText:
        """Each of ``lines`` and a newline (no argument: an empty line)."""
        self.parts += [f"{ln}\n" for ln in lines or ("",)]
        return self

    def raw(self, text: str) -> PageText:
        """``text`` as it is (no newline added)."""
        self.parts.append(text)
        return self

    def file(self, path: str | Path, from_line: int = 1) -> PageText:
        """The text of ``path`` as it is (from its line ``from_line`` on)."""
        self.parts.append(tail(path, from_line))
        return self

    def text(self) -> str:
        return "".join(self.parts)


def copy_figure(src: str | Path, page: Path, suffix: str) -> str:
    """Copy the figure ``src`` beside ``page`` as ``<page stem>_<suffix>.png``; its file name
    (for the page's link)."""
    target = page.parent / f"{page.stem}_{suffix}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target.name


def write_page(page: str | Path, text: str) -> Path:
    """Write ``text`` to ``page`` atomically; the path."""
    atomic_write_text(Path(page), text)
    print(f"wrote {page}")
    return Path(page)


def write_block(path: str | Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the marker lines ``start`` and ``end`` of the page ``path``
    (a generated block inside a hand-written page) with ``text``; a clear error names the file
    when a marker is missing, and the page is left as it was."""
    body = Path(path).read_text()
    if start not in body or end not in body:
        raise ValueError(f"{path}: no block {start} ... {end} to write into")
    head, rest = body.split(start, 1)
    tail_ = rest.split(end, 1)[1]
    atomic_write_text(Path(path), f"{head}{start}\n{text}\n{end}{tail_}")
