"""Cron schedules of Pipelines, as a Kubernetes CronJob reads them: when the next run is due. Pure.

The grammar is CronJob's (robfig/cron's standard parser): five fields (minute, hour, day of
month, month, day of week) with `*`, `?` (any), ranges, lists and steps, month and weekday
names, or one of the macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
`@hourly`. Six fields (seconds), `L`, `W` and `#` are not part of it and are refused rather than
given a meaning a cluster would not give them. `timeZone` names the IANA zone the fields are read
in (UTC when absent), like CronJob's `spec.timeZone`; the times this module returns are in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor.engine.names import child_name

MAX_CATCH_UP = 1000
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD = re.compile(r"^[A-Za-z0-9*?,/-]+$")
FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_PARSE_START = datetime(2000, 1, 1, tzinfo=UTC)  # any instant: only to parse


class ScheduleError(ValueError):
    """A schedule or time zone a CronJob would not accept; the message says which part and why."""


def normalize(expr: str) -> str:
    """The five-field expression `expr` stands for (macros expanded, `?` read as `*`), checked
    as CronJob checks it; ScheduleError otherwise."""
    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise ScheduleError(f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        return MACROS[text.lower()]
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError("a time zone inside the schedule is not supported; set spec.timeZone")
    fields = text.split()
    if len(fields) != len(FIELDS):
        raise ScheduleError(
            f"{len(fields)} field(s); a schedule has five ({', '.join(FIELDS)}), no seconds field"
        )
    for name, value in zip(FIELDS, fields, strict=True):
        if not FIELD.match(value) or re.search(r"(?<![A-Za-z])[LW](?![A-Za-z])|\d[LW]|L\d", value):
            raise ScheduleError(f"{name} field {value!r}: `L`, `W` and `#` are not cron as CronJob reads it")
    normalized = " ".join(f.replace("?", "*") for f in fields)
    try:
        CronSim(normalized, _PARSE_START)
    except CronSimError as err:
        raise ScheduleError(str(err)) from None
    return normalized


def zone(name: str | None) -> tzinfo:
    """The IANA time zone `name` (UTC when None); ScheduleError when there is no such zone."""
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None


def due_time(
    expr: str, last: datetime | None, now: datetime, time_zone: str | None = None
) -> datetime | None:
    """The latest scheduled time in (last, now], in UTC, or None. Missed times before it are
    skipped, as a CronJob without startingDeadlineSeconds would count them; with no `last`
    (first visit) nothing is due: schedules start from the time they are first seen."""
    if last is None:
        return None
    due = None
    for i, when in enumerate(CronSim(normalize(expr), last.astimezone(zone(time_zone)))):
        if when > now or i >= MAX_CATCH_UP:
            break
        due = when.astimezone(UTC)
    return due


def run_name_for(pipeline: str, when: datetime) -> str:
    return child_name(pipeline, when.astimezone(UTC).strftime("%Y%m%d%H%M"))
