"""The in-process controller fixtures of the controller tests, for the page's endpoints."""

from tests.controller.conftest import api, settings  # noqa: F401
