"""The one error shape of the API: ``{"error": {"code", "message", "field"?}}``.

>>> e = ApiError(403, "forbidden", "needs the operator role; this token is viewer")
>>> e.body()
{'error': {'code': 'forbidden', 'message': 'needs the operator role; this token is viewer'}}
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success, with the HTTP status it travels with."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
