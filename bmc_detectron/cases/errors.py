"""What the case database refuses, each a one-line message that names the thing (a case, a file,
a revision) and, where there is one, the way out."""

from __future__ import annotations


class CaseError(Exception):
    """Base of the case database's errors; ``str(e)`` is the one line to show."""


class SchemaError(CaseError):
    """The database is missing, at an older revision (run ``bmc cases upgrade``) or newer."""


class NotFoundError(CaseError):
    """An unknown case, field, cell or user."""


class ForbiddenError(CaseError):
    """A case of another lab than the user's (:mod:`.labs`)."""


class ConflictError(CaseError):
    """A cell changed since the caller read it (stale row version): nothing was written."""


class ReadOnlyError(CaseError):
    """An edit of a signed case (re-open it to make a new version)."""


class ReportError(CaseError):
    """A count report folder that cannot be imported (missing, corrupt, images gone)."""


class ExportError(CaseError):
    """Cases that cannot be exported (not signed, classes that disagree, a field twice)."""
