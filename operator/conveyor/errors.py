"""Conveyor's exceptions: one root, and the few kinds a caller decides on.

- `UserError`: the input is wrong and retrying will not help (a bad resource, a bad request,
  a bad file). The CLI exits 1 with its message, the model server answers 400, the operator
  marks the object invalid in its status.
- `NotFound`, `Conflict`: what an API verb met; the verb (or its caller) decides whether
  that is fine (a 404 on delete is) or not (a 404 on create: the namespace is gone).
- `Transient`: worth trying again after `delay` seconds (a 429, a 5xx, a namespace that is
  being deleted is not one: see `Gone`).
- `Gone`: the object's namespace is being deleted; nothing to retry, the object goes too.

Everything else is a bug or an outage: the operator logs it and retries with back-off.
"""

from __future__ import annotations


class ConveyorError(Exception):
    """The root of every error Conveyor raises on purpose."""


class UserError(ConveyorError, ValueError):
    """Input that is wrong as given; the message names the field and the fix."""


class NotFound(ConveyorError):
    """The object (or its namespace, or its API group) is not there."""


class Conflict(ConveyorError):
    """The name is taken, or the object changed since it was read (a resourceVersion
    precondition failed)."""


class Gone(ConveyorError):
    """The object's namespace is being deleted."""


class Transient(ConveyorError):
    """Try again after `delay` seconds."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay
