"""Conditions per the Kubernetes API conventions."""

from __future__ import annotations

from datetime import datetime

from conveyor.api.common import Condition


def set_condition(conditions: list[Condition], new: Condition, now: datetime) -> list[Condition]:
    """Return the list with `new` in place; lastTransitionTime moves only when status flips."""
    out = []
    placed = False
    for cond in conditions:
        if cond.type == new.type:
            moved = cond.status != new.status or cond.last_transition_time is None
            when = now if moved else cond.last_transition_time
            out.append(new.model_copy(update={"last_transition_time": when}))
            placed = True
        else:
            out.append(cond)
    if not placed:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out
