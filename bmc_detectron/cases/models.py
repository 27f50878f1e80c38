"""The case database's tables (SQLAlchemy 2 typed ORM).

* ``cases``: one row per version of a case (``case_id`` + ``version`` unique; a re-opened signed
  case is a new row whose ``parent_id`` is the signed one); status counted / in_review / signed;
  the lab that owns it (:mod:`.labs`);
* ``fields``: the case's fields, each image stored once by SHA-256 (:mod:`.store`);
* ``cells``: the model's cells (box, detector score, model class and probabilities) and what the
  reviewer made of them (reviewed class, deleted, added by a person, by whom and when); ``version``
  is the row version for optimistic concurrency (SQLAlchemy's ``version_id_col``);
* ``users``: local accounts (role reviewer / admin, argon2 password hash, lab: required for a
  reviewer, an admin may have none; ``session_epoch``: logging out increments it, see
  ``users.end_sessions``);
* ``sign_offs``: who signed which case version when, with the counts as signed;
* ``audit_log``: append-only, every change (who, when, what entity, old -> new JSON);
* ``login_failures``: the failed logins the login rate limit counts (:mod:`.logins`), one row per
  failure and per what it counts against (the user name, the client address); pruned.

Times are UTC, stored without a zone. The schema is created by the migrations
(``migrations/versions``), never by ``create_all``; a test checks that both agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, List, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bmc_detectron.cases.states import DEFAULT_LAB, ROLES, STATUSES

__all__ = [
    "ROLES",
    "STATUSES",
    "AuditEntry",
    "Base",
    "Case",
    "Cell",
    "Field",
    "LoginFailure",
    "SignOff",
    "User",
    "storable",
]


def utcnow() -> dt.datetime:
    """The current UTC time, without a zone (as stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def storable(text: str) -> bool:
    """Whether ``text`` can be stored in, or looked up against, a text column on every database:
    PostgreSQL refuses a NUL character outright (SQLite keeps it). A key holding one can match
    no row: callers answer "not found" without asking the database."""
    return "\x00" not in text


#: constraint and index names, the same on every database (Alembic's batch mode on SQLite needs
#: named constraints)
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The declarative base of the case tables."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A local account."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('reviewer', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    lab: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    #: the generation of the user's sessions: a session cookie carries the epoch it was issued
    #: at, logging out increments it (every older cookie is refused, even after a restart)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Case(Base):
    """One version of a case."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("case_id", "version", name="uq_cases_case_id_version"),
        CheckConstraint("status IN ('counted', 'in_review', 'signed')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("cases.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="counted", index=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(Text, default="")
    detector: Mapped[str] = mapped_column(Text, default="")
    classifier: Mapped[str] = mapped_column(Text, default="")
    class_names: Mapped[List[str]] = mapped_column(JSON)
    uncertain_below: Mapped[float] = mapped_column(Float, default=0.5)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lab: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_LAB, server_default=DEFAULT_LAB, index=True
    )

    fields: Mapped[List[Field]] = relationship(
        back_populates="case", order_by="Field.id", cascade="all, delete-orphan"
    )
    sign_offs: Mapped[List[SignOff]] = relationship(back_populates="case", order_by="SignOff.id")


class Field(Base):
    """One field (image) of a case; the image lies in the store under its SHA-256."""

    __tablename__ = "fields"
    __table_args__ = (UniqueConstraint("case_pk", "name", name="uq_fields_case_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_suffix: Mapped[str] = mapped_column(String(16))
    source_image: Mapped[str] = mapped_column(Text, default="")
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    flags: Mapped[List[str]] = mapped_column(JSON, default=list)

    case: Mapped[Case] = relationship(back_populates="fields")
    cells: Mapped[List[Cell]] = relationship(
        back_populates="field", order_by="Cell.id", cascade="all, delete-orphan"
    )


class Cell(Base):
    """One cell: as the model found it and as the reviewer left it."""

    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    field_id: Mapped[int] = mapped_column(ForeignKey("fields.id"), index=True)
    x0: Mapped[float] = mapped_column(Float)
    y0: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    det_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    det_class: Mapped[str] = mapped_column(String(64), default="")
    model_class: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    model_prob: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    probs: Mapped[Optional[List[float]]] = mapped_column(JSON, nullable=True)
    reviewed_class: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    added: Mapped[bool] = mapped_column(Boolean, default=False)
    reviewed_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), nullable=True)
    reviewed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    field: Mapped[Field] = relationship(back_populates="cells")
    reviewer: Mapped[Optional[User]] = relationship()

    __mapper_args__ = {"version_id_col": version}

    @property
    def box(self) -> tuple:
        """(x0, y0, x1, y1) in field pixels."""
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def final_class(self) -> Optional[str]:
        """The reviewed class, else the model's."""
        return self.reviewed_class if self.reviewed_class is not None else self.model_class


class SignOff(Base):
    """A signature: who signed a case version, when, and the counts as signed."""

    __tablename__ = "sign_offs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)

    case: Mapped[Case] = relationship(back_populates="sign_offs")
    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """One change, never updated nor deleted (the database refuses both on SQLite and
    PostgreSQL: triggers of the initial migration)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    case_pk: Mapped[Optional[int]] = mapped_column(
        ForeignKey("cases.id"), nullable=True, index=True
    )
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    old: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    new: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)


class LoginFailure(Base):
    """One failed login as the login rate limit counts it (:mod:`.logins`): against a user name
    or a client address (``kind``), at a time. Rows older than the limit's window are pruned."""

    __tablename__ = "login_failures"
    __table_args__ = (
        CheckConstraint("kind IN ('name', 'address')", name="kind"),
        Index("ix_login_failures_kind_subject_at", "kind", "subject", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(255))
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
