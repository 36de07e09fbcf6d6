from datetime import UTC, datetime

import pytest

from conveyor.engine.schedule import due_time, run_name_for


def t(hh: int, mm: int) -> datetime:
    return datetime(2026, 1, 1, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "last", "now", "due"),
    [
        ("*/5 * * * *", None, t(10, 7), None),  # first visit: nothing is due
        ("*/5 * * * *", t(10, 0), t(10, 4), None),
        ("*/5 * * * *", t(10, 0), t(10, 5), t(10, 5)),
        ("*/5 * * * *", t(10, 0), t(10, 17), t(10, 15)),  # missed ones are skipped: the latest
        ("0 3 * * *", t(2, 0), t(10, 0), t(3, 0)),
    ],
)
def test_due_time(expr: str, last: datetime | None, now: datetime, due: datetime | None) -> None:
    assert due_time(expr, last, now) == due


def test_scheduled_run_names_are_deterministic() -> None:
    assert run_name_for("nightly", t(3, 0)) == "nightly-202601010300"
