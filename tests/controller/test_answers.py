"""Agents' answers to orders are applied exactly once per idempotency key, on both stores:
a replay gets the first result back and changes nothing; a key reused for another
answer is refused; old kept answers are pruned."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.controller.store.models import AnswerRow, utcnow
from passthru.controller.store.retention import prune
from tests.controller.conftest import Api

HOST = "compute-1"
AGENT = f"/v2/agent/hosts/{HOST}"
GPU = {"address": "0000:81:00.0", "vendor_id": "10de", "product_id": "20b0"}


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(tmp_path / "data", db_url=db_url)
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings.admin_token_path.read_text().strip())


@pytest.fixture
def building(api: Api) -> tuple[str, str]:
    """A server being built on the host, holding its GPU; the host's agent token."""
    token = api.agent(HOST)
    api.ok("PUT", f"{AGENT}/inventory", token, json={"devices": [GPU]})
    api.ok("POST", f"{AGENT}/heartbeat", token)
    api.ok("POST", "/v2/admin/os-pci-flavors", json={"pci-flavor": {"name": "gpu",
                                                                    "vendor_id": "10de"}})
    api.ok("POST", "/v2/admin/flavors", json={"flavor": {"name": "m1.gpu"}})
    api.ok("POST", "/v2/admin/flavors/m1.gpu/os-extra_specs",
           json={"extra_specs": {"pci_passthrough:pci_flavor": "1:gpu"}})
    server = api.ok("POST", "/v2/admin/servers", json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "networks": []}})["server"]
    assert [o["server_uuid"] for o in api.ok("GET", f"{AGENT}/orders", token)["spawn"]] == [
        server["id"]]
    return server["id"], token


def answer(api: Api, token: str, uuid: str, kind: str, key: str | None,
           body: dict[str, Any] | None = None, query: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(f"{AGENT}/orders/{uuid}/{kind}{query}", headers=headers,
                           json=body if body is not None else {"server_uuid": uuid, "ok": True})


def events(api: Api, uuid: str) -> list[str]:
    listed = api.ok("GET", "/v2/admin/os-events", params={"server": uuid})["events"]
    return [event["kind"] for event in listed]


def test_a_replayed_spawned_answer_returns_the_first_result(api: Api,
                                                            building: tuple[str, str]) -> None:
    uuid, token = building
    first = answer(api, token, uuid, "spawned", "spawned-1")
    assert first.status_code == 200 and first.json()["status"] == "ACTIVE"
    seen = events(api, uuid)
    again = answer(api, token, uuid, "spawned", "spawned-1")
    assert again.status_code == 200 and again.json() == first.json()
    assert events(api, uuid) == seen  # applied once: one server-active, one allocation
    assert seen.count("server-active") == 1
    # Without a key a repeat is what it always was: refused, the server is not building.
    assert answer(api, token, uuid, "spawned", None).status_code == 400


def test_a_key_reused_for_another_answer_is_refused(api: Api, building: tuple[str, str]) -> None:
    uuid, token = building
    assert answer(api, token, uuid, "spawned", "k-1").status_code == 200
    api.ok("DELETE", f"/v2/admin/servers/{uuid}")
    reused = answer(api, token, uuid, "destroyed", "k-1")
    assert reused.status_code == 409
    assert "was used for the spawned answer" in reused.json()["error"]["message"]
    assert answer(api, token, uuid, "destroyed", "k-2").status_code == 200
    # And the destroy, replayed, is not a second destroy.
    assert answer(api, token, uuid, "destroyed", "k-2").status_code == 200
    assert events(api, uuid).count("server-destroyed") == 1


def test_a_replayed_lost_answer_and_a_bad_key(api: Api, building: tuple[str, str]) -> None:
    uuid, token = building
    assert answer(api, token, uuid, "spawned", "s").status_code == 200
    body = {"reason": "its domain is gone"}
    first = answer(api, token, uuid, "lost", "l", body)
    assert first.status_code == 200 and first.json()["status"] == "ERROR"
    again = answer(api, token, uuid, "lost", "l", body)
    assert again.json() == first.json()
    assert events(api, uuid).count("server-error") == 1
    for bad in ("", "has blank", "x" * 129):
        assert answer(api, token, uuid, "lost", bad, body).status_code in (400, 422)


def test_a_failed_answer_keeps_nothing_and_can_be_sent_again(api: Api,
                                                             building: tuple[str, str]) -> None:
    uuid, token = building
    other = "6f1d6a43-0000-4000-8000-000000000009"
    assert answer(api, token, other, "spawned", "x").status_code == 400  # not on the host
    assert answer(api, token, uuid, "spawned", "x").status_code == 200


def test_prune_answers_forgets_old_ones(api: Api, building: tuple[str, str]) -> None:
    uuid, token = building
    answer(api, token, uuid, "spawned", "old")
    store = api.client.app.state.store  # type: ignore[attr-defined]
    settings = api.client.app.state.settings  # type: ignore[attr-defined]
    assert prune(store, settings, utcnow() + timedelta(hours=1)).answers == 0
    assert prune(store, settings, utcnow() + timedelta(hours=25)).answers == 1
    with store.read() as session:
        assert session.get(AnswerRow, "old") is None
