"""What the maintenance logic refuses, with the HTTP status the API answers.

>>> NotFound("work order 'WO-2026-11-0001' does not exist").code
404
"""

from __future__ import annotations


class MaintenanceError(Exception):
    code = 422

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_reply(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class NotFound(MaintenanceError):
    code = 404


class Conflict(MaintenanceError):
    """A change the life cycle does not allow (completing a cancelled order...)."""

    code = 409


class Invalid(MaintenanceError):
    code = 422
