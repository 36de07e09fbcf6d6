"""Durations as a ModelDeployment spells them ("30s", "5m", "1h": a whole number and a unit),
parsed into a `timedelta`. Pure.

The API's fields keep the text (it is what the user wrote, what the CRD's pattern checks and
what a PrometheusRule's `for:` takes unchanged); planning code parses it here, where a text the
pattern would have refused is an error that says what a duration looks like.
"""

from __future__ import annotations

import re
from datetime import timedelta

from conveyor.errors import UserError

DURATION = re.compile(r"^([0-9]+)(s|m|h)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


class DurationError(UserError):
    """A text that is not a duration."""


def parse_duration(text: str) -> timedelta:
    """`"90s"` -> 90 seconds; `"5m"` -> 5 minutes; `"1h"` -> 1 hour."""
    match = DURATION.match(text)
    if match is None:
        raise DurationError(
            f"{text!r} is not a duration: write a whole number and a unit, s, m or h (30s, 5m, 1h)"
        )
    return timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])
