"""Cases owned by a lab: who may see and change which case.

Every case belongs to one lab (``cases.lab``, given at import: ``bmc cases import --lab``; a case
counted in the page takes the uploader's lab). Every reviewer belongs to one lab (``users.lab``,
required for a reviewer); an admin may have a lab (where their uploads go) but sees every lab.

The rule, in one place: a user's *scope* (:func:`lab_scope`) is None for an admin (every lab),
else their lab; a case outside the scope is refused with :class:`~.errors.ForbiddenError`
(:func:`check_case_lab`), and the case list leaves it out (``queries.find_cases(lab=...)``).
Databases made before labs existed hold every case and user in :data:`DEFAULT_LAB`.
"""

from __future__ import annotations

import re
from typing import Optional

from bmc_detectron.cases.errors import CaseError, ForbiddenError
from bmc_detectron.cases.states import DEFAULT_LAB

__all__ = ["DEFAULT_LAB", "check_case_lab", "check_lab", "lab_scope", "listed_lab"]
LAB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_lab(lab: str) -> str:
    """``lab`` if it is a valid lab name (letters, digits, ``. _ -``; up to 64), else error."""
    if not isinstance(lab, str) or not LAB_NAME.fullmatch(lab):
        raise CaseError(
            f"lab {lab!r}: use letters, digits and . _ - only (up to 64, no leading dot or dash)"
        )
    return lab


def lab_scope(role: str, lab: Optional[str]) -> Optional[str]:
    """The labs a user sees: None (all) for an admin, else the user's lab ("" for a reviewer
    without one: no case)."""
    return None if role == "admin" else (lab or "")


def check_case_lab(case_id: str, case_lab: str, scope: Optional[str]) -> None:
    """Refuse (:class:`ForbiddenError`) a case whose lab is outside ``scope``."""
    if scope is not None and case_lab != scope:
        raise ForbiddenError(f"case {case_id!r} belongs to another lab than {scope!r}")


def listed_lab(scope: Optional[str], asked: Optional[str]) -> Optional[str]:
    """The lab whose cases a list or export shows: for a user who sees every lab (``scope``
    None) ``asked`` (checked; None or "": every lab), else their own lab; asking for another
    lab than one's own is refused (:class:`~.errors.ForbiddenError`)."""
    if asked:
        check_lab(asked)
    if scope is None:
        return asked or None
    if asked and asked != scope:
        raise ForbiddenError(f"lab {asked!r} is not yours: you see your lab's cases only")
    return scope
