"""The one error shape of the API: ``{"error": {"code", "message", "field"?}}``.

>>> e = ApiError(403, "forbidden", "needs the operator role; this token is viewer")
>>> e.body()
{'error': {'code': 'forbidden', 'message': 'needs the operator role; this token is viewer'}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every refusal of the REST API: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in {
        400: "the request is malformed",
        401: "no token, or one that is not valid (expired, revoked, not for this API)",
        403: "the token's role may not do this",
        404: "no such route or resource",
        405: "the route does not take this method (the Allow header says which it takes)",
        413: "the body, or the range asked for, is too large",
        422: "a field is not valid (named in field)",
        429: "over the token's rate (retry after the time in the message)",
        503: "a service behind the API (NATS, the history database, the actors) is not "
        "answering; send again",
    }.items()
}
"""The error responses every REST route may give, for the OpenAPI document."""
