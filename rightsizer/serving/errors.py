"""The errors a served request can end in, each with its HTTP status (no web framework here)."""

from __future__ import annotations

from rightsizer.routing import RouteError


class ServingError(RouteError):
    """A request that cannot be answered: ``status`` is the HTTP code, the message names the
    field or the limit, ``retry_after`` (seconds) is set on overload (503). Its body is the
    route's error shape (``rightsizer.routing.error_body``: OpenAI's on /v1, V2's on /v2)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, param=param, retry_after=retry_after, headers=headers)


def bad_request(message: str, param: str | None = None) -> ServingError:
    return ServingError(400, message, param=param)
