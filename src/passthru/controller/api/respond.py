"""A route's answer serialized once.

FastAPI validates what an endpoint returns against the route's `response_model` again,
even a model instance the endpoint built itself, and for a plain `def` endpoint it does
so in a worker thread: a second thread hop per request. An endpoint that returns
`model_answer(body)` hands FastAPI a finished `Response`, which it sends as it is; the
bytes are the ones FastAPI would have sent (`model_dump_json(by_alias=True)`), and the
route's `response_model` still documents the answer in the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def model_answer(body: BaseModel, status_code: int = 200) -> Response:
    """`body` as a JSON answer with `status_code` (the route's own)."""
    return Response(body.model_dump_json(by_alias=True), status_code=status_code,
                    media_type="application/json")
