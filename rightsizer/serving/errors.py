"""The errors a served request can end in, each with its HTTP status (no web framework here)."""

from __future__ import annotations


class ServingError(Exception):
    """A request that cannot be answered: ``status`` is the HTTP code, the message names the
    field or the limit, ``retry_after`` (seconds) is set on overload (503)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after, self.param = status, message, retry_after, param

    def to_dict(self) -> dict:
        """The OpenAI-style error body."""
        kind = {400: "invalid_request_error", 404: "not_found_error", 413: "request_too_large",
                503: "unavailable_error",
                504: "timeout_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.status}}


def bad_request(message: str, param: str | None = None) -> ServingError:
    return ServingError(400, message, param=param)
