"""Fixtures: stores on SQLite and on a throwaway PostgreSQL cluster, and an API client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.migrate import upgrade
from tests.pg import PostgresCluster


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    upgrade(opened.engine)
    yield opened
    opened.close()


class Api:
    """The controller in-process, called with one token or another."""

    def __init__(self, client: TestClient, admin_token: str) -> None:
        self.client = client
        self.admin = admin_token

    def call(self, method: str, path: str, token: str | None = None, *,
             expect: int | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        response = self.client.request(method, path, headers=headers, **kwargs)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        response = self.call(method, path, token, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def member(self, project: str) -> str:
        body = {"token": {"project": project}}
        return str(self.ok("POST", "/v2/admin/tokens", json=body)["token"])

    def agent(self, host: str) -> str:
        return str(self.ok("POST", f"/v2/admin/os-hosts/{host}/tokens")["token"])


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """SQLite, or PostgreSQL for the tests marked `ON_BOTH`."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return Settings(tmp_path / "data")
    return Settings(tmp_path / "data", db_url=request.getfixturevalue("postgres").new_database())


#: The `settings` (and so the `api`) of a test on both stores.
ON_BOTH = pytest.mark.parametrize(
    "settings", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings.admin_token_path.read_text().strip())
