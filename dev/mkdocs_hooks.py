"""mkdocs hooks of the documentation site (``mkdocs.yml``: ``hooks``).

The package's docstrings cross-reference with Sphinx roles (``:func:`build_cfg```); mkdocstrings
renders their Markdown, where a role stays as text before the code span. The role is dropped and
the code span kept.
"""

from __future__ import annotations

import re
from typing import Any

SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """The page's HTML without Sphinx role prefixes in front of code spans."""
    return SPHINX_ROLE.sub("", html)
