"""The append-only trail: every change to a case is one :class:`~.models.AuditEntry`, added in the
same transaction as the change itself (both are kept, or neither).

The ORM refuses to update or delete an entry (:func:`refuse_audit_changes`, installed on import),
and the database refuses it too (triggers of the initial migration)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from sqlalchemy import event
from sqlalchemy.orm import Session

from bmc_detectron.cases.errors import CaseError
from bmc_detectron.cases.models import AuditEntry, Case, Cell


def cell_state(cell: Cell) -> Dict[str, Any]:
    """What the audit log keeps of a cell: its box and its review."""
    return {
        "box": [cell.x0, cell.y0, cell.x1, cell.y1],
        "model_class": cell.model_class,
        "reviewed_class": cell.reviewed_class,
        "deleted": bool(cell.deleted),
        "added": bool(cell.added),
        "version": cell.version,
    }


def record(
    session: Session,
    user_name: str,
    action: str,
    entity: str,
    entity_id: Optional[int],
    case: Optional[Case] = None,
    old: Optional[Dict[str, Any]] = None,
    new: Optional[Dict[str, Any]] = None,
) -> AuditEntry:
    """Add one audit entry to the session (written with the session's transaction)."""
    entry = AuditEntry(
        user_name=user_name,
        action=action,
        entity=entity,
        entity_id=entity_id,
        case_pk=None if case is None else case.id,
        old=old,
        new=new,
    )
    session.add(entry)
    return entry


@event.listens_for(Session, "before_flush")
def refuse_audit_changes(session: Session, _context: Any, _instances: Any) -> None:
    """An audit entry is never changed nor deleted."""
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise CaseError(f"audit_log entry {obj.id} is append-only: not changed")
