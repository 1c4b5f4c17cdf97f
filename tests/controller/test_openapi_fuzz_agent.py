"""Schemathesis as a host's agent, on both stores: every `/v2/agent/...` operation, with
the agent token of the host the path names, gets whatever schemathesis makes of its
schema; nothing answers 5xx, and every answer matches the schema."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.pci.work import SHA256_HEADER
from tests.controller.test_openapi_fuzz import _MEANING_CHECKS

# Requests go to the client of each store's app, while schemathesis' auth probes would go
# to the app it loaded the schema from: agent token scope is tested in test_auth.py.
_EXCLUDED = [*_MEANING_CHECKS, ignored_auth]

HOST = "c1"
PF = {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "1572",
      "dev_type": "type-PF", "tags": {"e.physical_network": "physnet1"}}
VF = {"address": "0000:0a:02.0", "vendor_id": "8086", "product_id": "154c",
      "dev_type": "type-VF", "parent_addr": PF["address"],
      "tags": {"e.physical_network": "physnet1"}}
GPU = {"address": "0000:81:00.0", "vendor_id": "10de", "product_id": "20b0"}


def seeded_app(settings: Settings) -> tuple[FastAPI, str]:
    """A controller whose host c1 has devices, a server being built and one running, and
    an image with a file; with c1's agent token."""
    application = create_app(settings)
    admin = {"Authorization": f"Bearer {settings.admin_token_path.read_text().strip()}"}
    with TestClient(application, headers=admin) as client:
        token = client.post(f"/v2/admin/os-hosts/{HOST}/tokens").json()["token"]
        agent = {"Authorization": f"Bearer {token}"}
        client.put(f"/v2/agent/hosts/{HOST}/inventory", headers=agent,
                   json={"devices": [PF, VF, GPU, {**GPU, "address": "0000:82:00.0"}]}
                   ).raise_for_status()
        client.post("/v2/admin/os-pci-flavors", json={"pci-flavor": {
            "name": "gpu", "vendor_id": "10de"}}).raise_for_status()
        client.post("/v2/admin/flavors", json={"flavor": {"name": "m1"}}).raise_for_status()
        client.post("/v2/admin/flavors/m1/os-extra_specs", json={
            "extra_specs": {"pci_passthrough:pci_flavor": "1:gpu"}}).raise_for_status()
        for name in ("running", "building"):
            client.post("/v2/admin/servers", json={"server": {
                "name": name, "flavorRef": "m1", "networks": []}}).raise_for_status()
        running = client.get("/v2/admin/servers/running").json()["server"]["id"]
        client.post(f"/v2/agent/hosts/{HOST}/orders/{running}/spawned", headers=agent,
                    json={"server_uuid": running, "ok": True}).raise_for_status()
        client.post("/v2/admin/images", json={"image": {
            "name": "disk", "disk_format": "raw"}}).raise_for_status()
        disk = b"\0" * 512
        client.put("/v2/admin/images/disk/file/disk", content=disk, headers={
            SHA256_HEADER: hashlib.sha256(disk).hexdigest()}).raise_for_status()
    return application, token


# Schemathesis collects one test per operation from a schema that exists at import time;
# the schema is the same on either store.
_DATA = tempfile.TemporaryDirectory(prefix="passthru-fuzz-agent-")
APP, TOKEN = seeded_app(Settings(Path(_DATA.name)))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).include(
    path_regex="^/v2/agent/")


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[TestClient, str]]:
    """A client of the seeded controller on each store, and its host's agent token."""
    if request.param == "sqlite":
        app, token = APP, TOKEN
    else:
        url = request.getfixturevalue("postgres").new_database()
        app, token = seeded_app(Settings(tmp_path_factory.mktemp("pg-data"), db_url=url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token
    if request.param != "sqlite":
        app.state.store.close()


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    APP.state.store.close()
    _DATA.cleanup()


@schema.parametrize()
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_errors_as_agent(case: schemathesis.Case,
                                   target: tuple[TestClient, str]) -> None:
    client, token = target
    if "host" in (case.path_parameters or {}):
        case.path_parameters["host"] = HOST
    auth = {"Authorization": f"Bearer {token}"}
    sent = case.as_transport_kwargs(headers=auth)
    if not sent.get("cookies"):
        sent.pop("cookies", None)  # per-request cookies are deprecated in the client
    response = client.request(**sent)
    assert response.status_code < 500, response.text
    case.validate_response(response, excluded_checks=_EXCLUDED, headers=auth,
                           transport_kwargs=sent)
