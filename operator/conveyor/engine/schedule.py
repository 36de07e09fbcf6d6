"""Cron schedules of Pipelines: when the next run is due. Pure."""

from __future__ import annotations

from datetime import datetime

from cronsim import CronSim

from conveyor.engine.names import child_name

MAX_CATCH_UP = 1000


def due_time(expr: str, last: datetime | None, now: datetime) -> datetime | None:
    """The latest scheduled time in (last, now], or None. Missed times before it are skipped,
    as a CronJob without startingDeadlineSeconds would count them; with no `last` (first visit)
    nothing is due: schedules start from the time they are first seen."""
    if last is None:
        return None
    due = None
    for i, when in enumerate(CronSim(expr, last)):
        if when > now or i >= MAX_CATCH_UP:
            break
        due = when
    return due


def run_name_for(pipeline: str, when: datetime) -> str:
    return child_name(pipeline, when.strftime("%Y%m%d%H%M"))
