"""Every error the API answers is `{"error": {"code", "kind", "title", "message"}}`.

`message` says what was wrong and what to do; `code` repeats the HTTP status so that a
script reading only the body still knows it; `kind` names the class of `passthru.errors`
the refusal is (`no_capacity` tells a full cloud from another conflict), so that the CLI
exits with that class's code. A `PassthruError` answers its own status: the mapping is the
error tree's, not a table here.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from passthru.controller.api.fields import NAME_PATTERN, NAME_RULE
from passthru.controller.store.db import commits_counted, unreachable
from passthru.errors import TREE, PassthruError, for_answer


class ErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status, repeated")
    kind: str = Field(description="What the refusal means (passthru.errors): " + ", ".join(
        f"`{meaning.kind}` ({meaning.status})" for meaning in TREE),
        json_schema_extra={"enum": [meaning.kind for meaning in TREE]})
    title: str = Field(description="The HTTP status's phrase")
    message: str = Field(description="What was wrong, where, and what to do")


class ErrorBody(BaseModel):
    error: ErrorDetail


#: Declared on every route so that the OpenAPI document describes error answers.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request was refused; `message` says why"},
    "5XX": {"model": ErrorBody,
            "description": "The controller, a host or the store failed; 503 says to retry"},
}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None,
                   kind: str | None = None) -> JSONResponse:
    """The error answer; `kind` is the status's class of the tree unless named."""
    title = HTTPStatus(status).phrase
    headers = dict(headers or {})
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    detail = ErrorDetail(code=status, kind=kind or for_answer(status).kind, title=title,
                         message=message)
    body = ErrorBody(error=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


_STORE_GONE = ("the controller's store cannot be reached now (PostgreSQL down or "
               "restarting, or SQLite locked)")


def store_unreachable(retry_after: int) -> JSONResponse:
    """503 for a request of which nothing was stored: Retry-After says to send it again."""
    return error_response(HTTPStatus.SERVICE_UNAVAILABLE,
                          f"{_STORE_GONE}; retry in {retry_after} s",
                          {"Retry-After": str(retry_after)})


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        message = item.get("msg", "invalid")
        if item.get("ctx", {}).get("pattern") == NAME_PATTERN:
            message = NAME_RULE
        problems.append(f"{where or 'body'}: {message}")
    return "the request is not valid: " + "; ".join(problems)


def store_complaint(error: DBAPIError) -> str:
    """What the store said was wrong, in its words: PostgreSQL's message and detail
    (`Key (name)=(m1) already exists.`), SQLite's (`UNIQUE constraint failed: flavors.name`)."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None and diag.message_primary:
        return "; ".join(part for part in (diag.message_primary, diag.message_detail) if part)
    return str(error.orig).splitlines()[0] if str(error.orig) else type(error.orig).__name__


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette names only the first route's,
    but each method of a resource here is its own route)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:  # PARTIAL: the path matches, the method does not
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def on_passthru_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, PassthruError)
        return error_response(error.status, str(error), kind=error.kind)

    async def on_validation(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, _validation_message(error))

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        message = str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == HTTPStatus.NOT_FOUND:
            message = "no such resource; the API is described at /openapi.json"
        elif error.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"this resource takes {', '.join(allowed)}; see /openapi.json"
        return error_response(error.status_code, message, headers)

    async def on_integrity(_request: Request, error: Exception) -> JSONResponse:
        # Two requests raced for the same name or reference: the loser is told to retry.
        assert isinstance(error, IntegrityError)
        return error_response(HTTPStatus.CONFLICT, "the request clashed with a change made "
                              "at the same time (a name taken, a reference removed): "
                              f"{store_complaint(error)}; retry")

    async def on_data(_request: Request, error: Exception) -> JSONResponse:
        # The fields' types keep such values out (`api.fields`); this is the net for one
        # that slips past them, so that it is still the caller's fault, not a 500.
        assert isinstance(error, DataError)
        return error_response(HTTPStatus.BAD_REQUEST, "a value of the request cannot be "
                              f"stored ({store_complaint(error)}); shorten or correct it")

    async def on_stale(_request: Request, error: Exception) -> JSONResponse:
        return error_response(HTTPStatus.CONFLICT, "a device changed while this request was "
                              "applied; retry")

    async def on_store_error(request: Request, error: Exception) -> JSONResponse:
        if not unreachable(error):
            raise error
        if commits_counted() == 0:
            return store_unreachable(request.app.state.settings.store_retry_after)
        # No Retry-After: sent again, the part already stored would be made twice.
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"{_STORE_GONE} after part of "
                              "this request was stored; see what it did (e.g. passthru list) "
                              "before sending it again")

    app.add_exception_handler(PassthruError, on_passthru_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(DataError, on_data)
    app.add_exception_handler(StaleDataError, on_stale)
    app.add_exception_handler(DBAPIError, on_store_error)
    app.add_exception_handler(PoolTimeoutError, on_store_error)
