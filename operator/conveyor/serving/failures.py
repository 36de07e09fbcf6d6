"""What a failed request is answered: one place maps errors to statuses and wordings (400, 404,
405 with `Allow`, 408, 413, 431, else a 500 whose cause is logged under a request id), always
as a JSON `{"error": ...}`."""

from __future__ import annotations

import logging
import re
import uuid

from conveyor.errors import NotFound, UserError
from conveyor.serving.http import MAX_HEAD_BYTES, HttpError, Request, Response, json_response

log = logging.getLogger("conveyor.serving")
ROUTES = (
    "/v2[/], /v2/health/{live,ready}, /v2/models/{name}[/versions/{version}][/ready|/infer|/feedback], "
    "/predict, /feedback, /metrics"
)
MAX_HEAD_KIB = MAX_HEAD_BYTES >> 10
REQUEST_ID = re.compile(r"[\w.-]{1,64}")


def error_response(request: Request, err: Exception, max_body_bytes: int, body_timeout: float) -> Response:
    """One place maps errors to statuses: 400, 404, 405, 408, 413, other 4xx, else 500."""
    if isinstance(err, UserError):
        return _json_error(str(err), 400)
    if isinstance(err, NotFound):
        return _json_error(str(err), 404)
    if isinstance(err, HttpError):
        return _http_error(request, err, max_body_bytes, body_timeout)
    given = request.headers.get("x-request-id", "")
    request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    log.error("request %s: %s %s failed", request_id, request.method, request.path, exc_info=err)
    return json_response(
        {
            "error": f"internal error (request id {request_id}); the server logged its cause: "
            "report the id to the model's operators",
            "request_id": request_id,
        },
        status=500,
        headers={"X-Request-Id": request_id},
    )


def _http_error(request: Request, err: HttpError, max_body_bytes: int, body_timeout: float) -> Response:
    if err.status == 413:
        limit = max_body_bytes
        return _json_error(f"the body is over {limit} bytes; send fewer rows per request", 413)
    if err.status == 408:
        response = _json_error(
            f"the request body did not arrive within {body_timeout:g} s; "
            "send the whole body at once, or fewer rows per request",
            408,
        )
        response.close = True  # the rest of the body may never come: do not wait for it
        return response
    if err.status == 405:
        allow = ", ".join(err.allow)
        message = f"{request.method} is not allowed on {request.path}; use {allow}"
        return _json_error(message, 405, {"Allow": allow})
    if err.status == 404:
        return _json_error(f"no route {request.path}; the routes are {ROUTES}", 404)
    if err.status == 431:
        return _json_error(f"the request's headers are over {MAX_HEAD_KIB} KiB; send fewer", 431)
    if err.status == 400:
        return _json_error("the request is not valid HTTP/1.1; send a well-formed request", 400)
    return _json_error(str(err), err.status)


def _json_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status=status, headers=headers)
