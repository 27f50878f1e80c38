"""The login rate limit kept in the database (SQLite and PostgreSQL): the window per name and per
address, two limits on one database sharing the count, a reopened database keeping it, a right
password forgetting only its own name's failures, old rows pruned, each failure and refusal
audited (a fake clock)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bmc_detectron.cases.logins import LoginLimit
from bmc_detectron.cases.models import AuditEntry, LoginFailure

from .helpers import new_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_windows_per_name_and_per_address(tmp_path, db_url):
    db, clock = new_db(tmp_path, db_url), Clock()
    limit = LoginLimit(3, 60.0, clock)

    def wait(name: str, address: str):
        with db.session() as s:
            return limit.retry_after(s, name, address)

    def fail(name: str, address: str) -> None:
        with db.session() as s:
            limit.failed(s, name, address)

    for address in ("a1", "a2", "a3"):  # one name from three addresses
        assert wait("rex", address) is None
        fail("rex", address)
    assert wait("rex", "a4") == 60
    assert wait("ada", "a4") is None
    clock.now += 59.5
    assert wait("rex", "a4") == 1  # rounded up
    clock.now += 0.5
    assert wait("rex", "a4") is None  # the first failure left the window
    fail("ada", "a9")
    fail("ada", "a9")
    with db.session() as s:
        limit.succeeded(s, "ada")  # the right password forgets the name's failures...
    fail("bob", "a9")
    assert wait("ada", "a8") is None
    assert wait("zed", "a9") == 60  # ...not the address's
    with pytest.raises(ValueError, match="0 failures"):
        LoginLimit(0, 60.0, clock)
    db.close()


def test_two_limits_on_one_database_share_the_count_and_a_reopen_keeps_it(tmp_path, db_url):
    first, clock = new_db(tmp_path, db_url), Clock()
    second = type(first)(first.url, first.store.root)  # another server process's engine
    a, b = LoginLimit(5, 900.0, clock), LoginLimit(5, 900.0, clock)
    for db, limit, n in ((first, a, 3), (second, b, 2)):
        for _ in range(n):
            with db.session() as s:
                assert limit.check(s, "rex", "10.0.0.1") is None
                limit.failed(s, "rex", "10.0.0.1")
            clock.now += 1
    with first.session() as s:
        assert a.check(s, "rex", "10.0.0.2") == 900 - 5  # the name: 5 failures, on both servers
        a.failed(s, "ada", "10.0.0.3")
    with second.session() as s:
        assert b.check(s, "eve", "10.0.0.1") == 900 - 5  # the address too
        b.succeeded(s, "ada")  # ada's success does not reset rex's count
    first.close()
    second.close()
    again = type(first)(first.url, first.store.root)  # "after a restart"
    with again.session() as s:
        assert LoginLimit(5, 900.0, clock).retry_after(s, "rex", "10.0.0.9") == 895
        rows = select(AuditEntry.user_name, AuditEntry.action, AuditEntry.new)
        audit = s.execute(rows.order_by(AuditEntry.id)).all()
    assert [x[1] for x in audit] == ["login_failed"] * 5 + [
        "login_refused",
        "login_failed",
        "login_refused",
    ]
    assert audit[5] == ("rex", "login_refused", {"address": "10.0.0.2", "retry_after_s": 895})
    again.close()


def test_old_failures_are_pruned_and_odd_names_are_stored(tmp_path, db_url):
    db, clock = new_db(tmp_path, db_url), Clock()
    limit = LoginLimit(2, 60.0, clock)
    odd = "a\x00b" + "x" * 300  # PostgreSQL refuses NUL; longer than the column
    with db.session() as s:
        limit.failed(s, "old", "10.0.0.1")
        limit.failed(s, odd, "10.0.0.2")
        limit.failed(s, odd, "10.0.0.2")
        assert limit.retry_after(s, odd, "elsewhere") == 60
    clock.now += 61
    with db.session() as s:
        limit.failed(s, "new", "10.0.0.3")  # every row out of the window goes
        rows = s.execute(select(LoginFailure.kind, LoginFailure.subject)).all()
        assert sorted(rows) == [("address", "10.0.0.3"), ("name", "new")]
        names = s.scalars(select(AuditEntry.user_name).order_by(AuditEntry.id))
        assert list(names)[1] == ("a?b" + "x" * 300)[:64]
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 4
    db.close()
