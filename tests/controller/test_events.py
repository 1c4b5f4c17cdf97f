"""The event history through the API: who had a VF and when, and every filter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.controller.conftest import Api
from tests.web.fleet import VF, silence, vf, vf_history

V2 = "/v2/admin"
OTHER_VF = "0000:0a:02.1"


@pytest.fixture
def history(api: Api) -> Api:
    """One VF, held by vm-a, freed, then held by vm-b (see `vf_history`)."""
    api.client.headers["Authorization"] = f"Bearer {api.admin}"
    vf_history(api.client, api.client.app.state.store)  # type: ignore[attr-defined]
    del api.client.headers["Authorization"]  # from here on each call names its token
    return api


def events(api: Api, **params: Any) -> list[dict[str, Any]]:
    return list(api.ok("GET", f"{V2}/os-events", params=params)["events"])


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["server_name"]) for e in found]


def test_a_devices_events_say_who_had_it_and_when(history: Api) -> None:
    found = events(history, device="0a:02.0")  # the short form names the same device
    assert summary(found) == [("device-claimed", "vm-b"), ("device-freed", "vm-a"),
                              ("device-claimed", "vm-a"), ("device-added", None)]
    assert {(e["host"], e["device"]) for e in found} == {("net-1", VF)}
    assert {e["project"] for e in found if e["server"]} == {"demo"}
    times = [e["time"] for e in found]
    assert times == sorted(times, reverse=True)


def test_a_servers_events_by_name_outlive_the_server(history: Api) -> None:
    found = events(history, server="vm-a")
    assert [e["kind"] for e in found] == ["server-deleted", "device-freed", "device-claimed",
                                          "server-created"]
    by_uuid = events(history, server=found[0]["server"])
    assert by_uuid == found


def test_kinds_hosts_and_limits_narrow_the_list(history: Api) -> None:
    claims_and_frees = events(history, kind=["device-claimed", "device-freed"])
    assert summary(claims_and_frees) == [("device-claimed", "vm-b"), ("device-freed", "vm-a"),
                                         ("device-claimed", "vm-a")]
    assert events(history, host="net-2") == []
    assert {e["host"] for e in events(history, host="net-1")} == {"net-1"}
    assert summary(events(history, limit=1)) == [("device-claimed", "vm-b")]


def test_since_and_until_split_the_history(history: Api) -> None:
    freed = events(history, kind="device-freed")[0]["time"]
    assert summary(events(history, device=VF, since=freed)) == [
        ("device-claimed", "vm-b"), ("device-freed", "vm-a")]
    assert summary(events(history, device=VF, until=freed)) == [
        ("device-claimed", "vm-a"), ("device-added", None)]
    without_zone = freed.removesuffix("Z").split("+")[0]  # a bare time means UTC
    assert events(history, device=VF, since=without_zone) == events(history, device=VF,
                                                                     since=freed)


def test_inventory_changes_and_a_silent_host_are_listed(api: Api) -> None:
    api.ok("PUT", "/v2/agent/hosts/net-1/inventory",
           json={"devices": [vf(VF), vf(OTHER_VF)]})
    api.ok("PUT", "/v2/agent/hosts/net-1/inventory", json={"devices": [vf(VF)]})
    silence(api.client.app.state.store, "net-1")  # type: ignore[attr-defined]
    found = events(api, host="net-1")
    assert [(e["kind"], e["device"]) for e in found] == [
        ("host-down", None), ("device-removed", OTHER_VF), ("device-added", OTHER_VF),
        ("device-added", VF), ("host-added", None)]
    assert found[0]["message"].startswith("no heart-beat since ")


def test_only_admins_read_events_and_bad_filters_say_why(history: Api) -> None:
    member = history.member("demo")
    refused = history.call("GET", "/v2/demo/os-events", member, expect=403)
    assert refused.json()["error"]["message"].startswith("listing events needs an admin token")
    anonymous = history.client.get(f"{V2}/os-events")
    assert anonymous.status_code == 401
    bad = history.call("GET", f"{V2}/os-events", params={"device": "0a:02"}, expect=400)
    assert bad.json()["error"]["message"].startswith("device filter: PCI address '0a:02'")
    late = history.call("GET", f"{V2}/os-events",
                        params={"since": "9999-12-31T23:59:59-23:59"}, expect=400)
    assert late.json()["error"]["message"].startswith(
        "since 9999-12-31T23:59:59-23:59 is out of range in UTC")
    typo = history.call("GET", f"{V2}/os-events", params={"kind": "device-claim"}, expect=422)
    assert "device-claimed" in typo.json()["error"]["message"]
    too_many = history.call("GET", f"{V2}/os-events", params={"limit": 0}, expect=400)
    assert "limit" in too_many.json()["error"]["message"]
