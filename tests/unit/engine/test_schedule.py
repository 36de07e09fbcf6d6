"""Cron schedules as a CronJob reads them: due times, macros, refusals and time zones."""

import re
from datetime import UTC, datetime

import pytest

from conveyor.api.pipeline import PipelineSpec
from conveyor.engine.schedule import ScheduleError, due_time, normalize, run_name_for, zone
from conveyor.engine.validation import check_pipeline_spec


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


@pytest.mark.parametrize(
    ("expr", "normal"),
    [
        pytest.param("@daily", "0 0 * * *", id="daily"),
        pytest.param("@midnight", "0 0 * * *", id="midnight"),
        pytest.param("@hourly", "0 * * * *", id="hourly"),
        pytest.param("@weekly", "0 0 * * 0", id="weekly"),
        pytest.param("@monthly", "0 0 1 * *", id="monthly"),
        pytest.param("@yearly", "0 0 1 1 *", id="yearly"),
        pytest.param("0 0 ? * MON-FRI", "0 0 * * MON-FRI", id="question-mark-and-names"),
        pytest.param(" */15 * * JAN,JUL * ", "*/15 * * JAN,JUL *", id="steps-lists"),
    ],
)
def test_cronjob_forms_are_accepted(expr: str, normal: str) -> None:
    assert normalize(expr) == normal


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        pytest.param("0 0 3 * * *", "6 field(s)", id="seconds-field"),
        pytest.param("0 0 L * *", "`L`, `W` and `#`", id="last-day"),
        pytest.param("0 0 15W * *", "`L`, `W` and `#`", id="weekday"),
        pytest.param("0 0 * * 1#2", "`L`, `W` and `#`", id="nth-weekday"),
        pytest.param("0 0 * * 5L", "`L`, `W` and `#`", id="last-friday"),
        pytest.param("@every 1h", "unknown macro", id="every"),
        pytest.param("TZ=Europe/Paris 0 3 * * *", "spec.timeZone", id="tz-prefix"),
        pytest.param("61 * * * *", "Bad minute", id="out-of-range"),
    ],
)
def test_what_a_cronjob_refuses_is_refused(expr: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(says)):
        normalize(expr)


def test_a_macro_is_due_like_its_fields() -> None:
    assert due_time("@hourly", t(10, 0), t(12, 30)) == t(12, 0)


def test_the_time_zone_moves_the_due_time() -> None:
    # 03:00 in Paris is 02:00 UTC in January; in New York it is 08:00 UTC
    assert due_time("0 3 * * *", t(0, 0), t(12, 0), "Europe/Paris") == t(2, 0)
    assert due_time("0 3 * * *", t(0, 0), t(12, 0), "America/New_York") == t(8, 0)
    assert due_time("0 3 * * *", t(0, 0), t(12, 0)) == t(3, 0)
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


def test_validate_names_the_schedule_and_the_zone() -> None:
    spec = PipelineSpec.model_validate(
        {"schedule": "0 0 L * *", "timeZone": "Nowhere/City", "stages": [{"name": "a", "uses": "ingest"}]}
    )
    problems = check_pipeline_spec(spec, "spec")
    assert {p.path for p in problems} >= {"spec.schedule", "spec.timeZone"}
