"""The application `passthru serve` runs: the controller's REST API and, beside it, the
fleet page.

This is the one place the two meet. The controller knows nothing of the page, and the
page (`passthru.web`) knows the API only as the paths its script calls from the
browser, so either can change without the other's modules loading.
"""

from __future__ import annotations

from fastapi import FastAPI

from passthru.controller.app import create_api
from passthru.controller.settings import Settings
from passthru.web import routes as web


def create_app(settings: Settings) -> FastAPI:
    """The API, its store opened and migrated, with the fleet page at `/ui` after every
    API route."""
    app = create_api(settings)
    app.include_router(web.router)
    return app
