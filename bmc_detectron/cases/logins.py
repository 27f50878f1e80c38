"""The login rate limit, kept in the database: after ``max_failures`` failed logins for one user
name, or from one client address, within ``window_s`` seconds, further logins of that name or
from that address are refused (the web page answers 429 with Retry-After) until the oldest of
those failures leaves the window, even with the right password.

Every failure is a row of ``login_failures`` per thing it counts against (the name, the
address; :class:`~.models.LoginFailure`), so every server process on the database shares the
limit and a restart keeps it. Rows older than the window are deleted at each new failure. A
right password forgets the name's failures, not the address's (nor another name's). Each failure
(``login_failed``) and each refusal (``login_refused``) is written to the audit log (entity
``login``) in the same transaction as the row.

Two servers checking one name at the same instant may both let an attempt through: the limit can
be overrun by the attempts in flight at once, never more. Servers on one database should share
the settings (each prunes with its own window).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bmc_detectron.cases.audit import record
from bmc_detectron.cases.models import LoginFailure

NAME, ADDRESS = "name", "address"
SUBJECT_CHARS = 255  # the longest name or address kept (longer ones are cut)
AUDIT_NAME_CHARS = 64  # the audit log's user_name column


def _subject(text: str, length: int = SUBJECT_CHARS) -> str:
    """``text`` as stored: cut to ``length``, a NUL (refused by PostgreSQL) as '?'."""
    return text.replace("\x00", "?")[:length]


@dataclass(frozen=True)
class LoginLimit:
    """The rule (``max_failures`` in ``window_s`` seconds) and the clock (seconds since the epoch,
    replaceable in tests). Every method works in the caller's session (one transaction)."""

    max_failures: int = 5
    window_s: float = 15 * 60.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_s <= 0:
            raise ValueError(f"login limit: {self.max_failures} failures in {self.window_s} s")

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).replace(tzinfo=None)

    def _wait(self, session: Session, kind: str, subject: str, now: dt.datetime) -> Optional[float]:
        """Seconds until ``subject`` has fewer than ``max_failures`` failures in the window."""
        window = dt.timedelta(seconds=self.window_s)
        oldest_counted = session.scalar(
            select(LoginFailure.at)
            .where(LoginFailure.kind == kind, LoginFailure.subject == _subject(subject))
            .where(LoginFailure.at > now - window)
            .order_by(LoginFailure.at.desc())
            .offset(self.max_failures - 1)
            .limit(1)
        )
        return None if oldest_counted is None else (oldest_counted + window - now).total_seconds()

    def retry_after(self, session: Session, name: str, address: str) -> Optional[int]:
        """Seconds (whole, rounded up, at least 1) until a login of ``name`` from ``address`` is
        allowed again; None when it is allowed now."""
        now = self._now()
        waits = [self._wait(session, kind, subject, now) for kind, subject in _keys(name, address)]
        waits = [w for w in waits if w is not None]
        return max(1, math.ceil(max(waits))) if waits else None

    def check(self, session: Session, name: str, address: str) -> Optional[int]:
        """:meth:`retry_after`; a refusal is written to the audit log (``login_refused``)."""
        wait = self.retry_after(session, name, address)
        if wait is not None:
            _audit(session, name, "login_refused", {"address": address, "retry_after_s": wait})
        return wait

    def failed(self, session: Session, name: str, address: str) -> None:
        """Count one failed login of ``name`` from ``address`` (audited as ``login_failed``);
        failures older than the window are deleted."""
        now = self._now()
        session.execute(
            delete(LoginFailure).where(LoginFailure.at <= now - dt.timedelta(seconds=self.window_s))
        )
        for kind, subject in _keys(name, address):
            session.add(LoginFailure(kind=kind, subject=_subject(subject), at=now))
        _audit(session, name, "login_failed", {"address": address})

    def succeeded(self, session: Session, name: str) -> None:
        """A right password: the name's failures are forgotten (the address's are kept)."""
        session.execute(
            delete(LoginFailure).where(
                LoginFailure.kind == NAME, LoginFailure.subject == _subject(name)
            )
        )


def _keys(name: str, address: str) -> tuple:
    return (NAME, name), (ADDRESS, address)


def _audit(session: Session, name: str, action: str, new: dict) -> None:
    record(session, _subject(name, AUDIT_NAME_CHARS), action, "login", None, new=new)
