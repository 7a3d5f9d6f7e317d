"""HTTP errors raised anywhere in the server and rendered as Cytomine-style JSON messages."""
from __future__ import annotations


class ApiError(Exception):
    """An error answered with `status` and a JSON body `{"success": false, "message": ..., "errors": ...}`."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404

    @classmethod
    def of(cls, kind: str, ident: object) -> "NotFound":
        """`kind ident not found`, the message used for every unknown id."""
        return cls(f"{kind} {ident} not found")


class PayloadTooLarge(ApiError):
    status = 413
