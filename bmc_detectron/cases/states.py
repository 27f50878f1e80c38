"""The case database's fixed vocabularies (no SQLAlchemy here: the command's ``--help`` reads
them without the ``cases`` extra)."""

from __future__ import annotations

#: a case's status: just imported, being reviewed, signed (read-only)
STATUSES = ("counted", "in_review", "signed")
#: a user's role
ROLES = ("reviewer", "admin")
#: the lab of cases and users made before labs existed, and of imports that name none
DEFAULT_LAB = "default"
