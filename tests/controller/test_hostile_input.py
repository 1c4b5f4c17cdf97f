"""Hostile input to the admin and member API, on SQLite and PostgreSQL: control characters
and lone surrogates in names, references and free text, counts written in other scripts'
digits, integers past what the store's columns hold, over-long names and path parameters.
Each gets a 4xx JSON error that says what was wrong; none reaches the store as a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.controller.store.models import FlavorRow
from tests.controller.conftest import Api

V2 = "/v2/admin"
MEMBER = "/v2/p1"
NUL = "a\x00b"
#: Control characters (and a lone surrogate, which no store can encode) for names.
BAD_CHARS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ud800"]


@pytest.fixture
def hostile(db_url: str, tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """A controller on `db_url` with a catalog, a host, a server and a port of project p1,
    and a member token of p1."""
    settings = Settings(tmp_path / "data", db_url)
    with TestClient(create_app(settings)) as client:
        api = Api(client, settings.admin_token_path.read_text().strip())
        api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {
            "name": "bigGPU", "vendor_id": "10de"}})
        api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1"}})
        api.ok("POST", f"{V2}/networks", json={"network": {
            "name": "prod", "physical_network": "physnet1", "segmentation_id": 100}})
        agent = api.agent("c1")
        api.ok("PUT", "/v2/agent/hosts/c1/inventory", agent, json={"devices": [
            {"address": "0000:0a:00.0", "vendor_id": "10de", "product_id": "1db6"}]})
        member = api.member("p1")
        api.ok("POST", f"{MEMBER}/ports", member, json={"port": {"network_id": "prod"}})
        api.ok("POST", f"{MEMBER}/servers", member, json={"server": {
            "name": "vm", "flavorRef": "m1"}})
        yield api, member


def _refused(api: Api, token: str, method: str, path: str, **kwargs: Any) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    if "json" in kwargs:  # as \u escapes, which carry lone surrogates too
        kwargs["content"] = json.dumps(kwargs.pop("json"))
        headers["Content-Type"] = "application/json"
    answer = api.client.request(method, path, headers=headers, **kwargs)
    assert 400 <= answer.status_code < 500, (method, path, kwargs, answer.text)
    error = answer.json()["error"]
    assert error["code"] == answer.status_code
    assert error["message"], answer.text
    return str(error["message"])


def _text_bodies(bad: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Admin requests that carry `bad` in a free-text field (a description, a value)."""
    return [
        ("POST", f"{V2}/ports", {"port": {"network_id": "prod", "mac_address": bad}}),
        ("POST", f"{V2}/os-pci-flavors", {"pci-flavor": {"name": "x", "description": bad}}),
        ("POST", f"{V2}/os-pci-flavors", {"pci-flavor": {"name": "x", "vendor_id": bad}}),
        ("POST", f"{V2}/os-pci-flavors", {"pci-flavor": {"name": "x", "e.tag": bad}}),
        ("PUT", f"{V2}/os-pci-flavors/bigGPU", {"action": "set", "pci-flavor": {
            "description": bad}}),
        ("PUT", f"{V2}/os-pci-flavors/bigGPU", {"action": "set", "pci-flavor": {
            "e.tag": bad}}),
        ("POST", f"{V2}/images", {"image": {"name": "i", "properties": {"k": bad}}}),
        ("POST", f"{V2}/flavors/m1/os-extra_specs", {"extra_specs": {"k": bad}}),
        ("POST", f"{V2}/os-keypairs", {"keypair": {"name": "k", "public_key": "ssh-ed25519 "
                                                   "AAAAC3NzaC1lZDI1NTE5AAAAIHKTe7aduWVrvr"
                                                   f"PD1m5Rf+stb1tuFgcsahO+z8j6QrsU {bad}"}}),
    ]


def _bodies(bad: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Admin requests that carry `bad` in a name or reference, or anywhere in the text
    when it is a NUL or lone surrogate."""
    texts = _text_bodies(bad) if bad.strip("ab") in ("\x00", "\ud800") else []
    return [
        *texts,
        ("POST", f"{V2}/servers", {"server": {"name": bad, "flavorRef": "m1"}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": bad}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": "m1",
                                              "imageRef": bad}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": "m1",
                                              "key_name": bad}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": "m1",
                                              "networks": [{"uuid": bad}]}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": "m1",
                                              "networks": [{"port": bad}]}}),
        ("POST", f"{V2}/servers", {"server": {"name": "ok", "flavorRef": "m1", "networks": [
            {"uuid": "prod", "vnic_type": "direct", "pci_flavor": bad}]}}),
        ("POST", f"{V2}/networks", {"network": {"name": bad, "physical_network": "p"}}),
        ("POST", f"{V2}/networks", {"network": {"name": "n", "physical_network": bad}}),
        ("POST", f"{V2}/networks", {"network": {"name": "n", "physical_network": "p",
                                                "project": bad}}),
        ("POST", f"{V2}/flavors", {"flavor": {"name": bad}}),
        ("POST", f"{V2}/ports", {"port": {"network_id": bad}}),
        ("POST", f"{V2}/ports", {"port": {"network_id": "prod", "name": bad}}),
        ("POST", f"{V2}/ports", {"port": {"network_id": "prod", "pci_flavor": bad}}),
        ("POST", f"{V2}/os-pci-flavors", {"pci-flavor": {"name": bad}}),
        ("POST", f"{V2}/os-pci-flavors", {"pci-flavor": {"name": "x", f"e.{bad}": "1"}}),
        ("PUT", f"{V2}/os-pci-flavors/bigGPU", {"action": "set", "pci-flavor": {
            "name": bad}}),
        ("POST", f"{V2}/images", {"image": {"name": bad}}),
        ("POST", f"{V2}/images", {"image": {"name": "i", "properties": {bad: "v"}}}),
        ("POST", f"{V2}/images", {"image": {"name": "i", "disk_format": bad}}),
        ("POST", f"{V2}/flavors/m1/os-extra_specs", {"extra_specs": {bad: "v"}}),
        ("POST", f"{V2}/flavors/m1/os-extra_specs", {"extra_specs": {
            "pci_passthrough:pci_flavor": f"1:{bad}"}}),
        ("POST", f"{V2}/os-keypairs", {"keypair": {"name": bad, "public_key": "ssh-ed25519 "
                                                   "AAAAC3NzaC1lZDI1NTE5AAAAIHKTe7aduWVrvr"
                                                   "PD1m5Rf+stb1tuFgcsahO+z8j6QrsU"}}),
        ("POST", f"{V2}/tokens", {"token": {"project": bad}}),
    ]


def test_control_characters_in_bodies_are_refused(hostile: tuple[Api, str]) -> None:
    api, _ = hostile
    for char in BAD_CHARS:
        for method, path, body in _bodies(f"a{char}b"):
            _refused(api, api.admin, method, path, json=body)


def test_user_data_with_a_nul_is_refused(hostile: tuple[Api, str]) -> None:
    api, member = hostile
    message = _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
        "name": "x", "flavorRef": "m1", "user_data": base64.b64encode(b"#!\0").decode()}})
    assert message == ("user_data holds a NUL byte at offset 2; it must be text (a "
                       "#cloud-config or a script)")


def test_multi_create_names_must_fit_with_their_suffix(hostile: tuple[Api, str]) -> None:
    api, member = hostile
    message = _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
        "name": "n" * 253, "flavorRef": "m1", "min_count": 10}})
    assert message == ("server.name is 253 characters; with min_count 10 the servers are "
                       "named NAME-1 ... NAME-10, so it may have at most 252")


def test_a_nul_in_a_name_is_refused_saying_so(hostile: tuple[Api, str]) -> None:
    api, member = hostile
    message = _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
        "name": " vm", "flavorRef": "m1"}})
    assert message == ("the request is not valid: server.name: a name must not begin or end "
                       "with a blank, nor hold a line break")
    message = _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
        "name": NUL, "flavorRef": "m1"}})
    assert "server.name" in message and "control character" in message


def _paths(bad: str) -> list[tuple[str, str]]:
    ref = quote(bad, safe="")
    return [
        ("GET", f"{V2}/servers/{ref}"), ("DELETE", f"{V2}/servers/{ref}"),
        ("GET", f"{V2}/servers/{ref}/console-log"),
        ("GET", f"{V2}/flavors/{ref}"), ("DELETE", f"{V2}/flavors/{ref}"),
        ("GET", f"{V2}/flavors/{ref}/os-extra_specs"),
        ("DELETE", f"{V2}/flavors/m1/os-extra_specs/{ref}"),
        ("GET", f"{V2}/networks/{ref}"), ("DELETE", f"{V2}/networks/{ref}"),
        ("GET", f"{V2}/ports/{ref}"), ("DELETE", f"{V2}/ports/{ref}"),
        ("GET", f"{V2}/images/{ref}"), ("DELETE", f"{V2}/images/{ref}"),
        ("GET", f"{V2}/os-keypairs/{ref}"), ("DELETE", f"{V2}/os-keypairs/{ref}"),
        ("GET", f"{V2}/os-pci-flavors/{ref}"), ("DELETE", f"{V2}/os-pci-flavor/{ref}"),
        ("GET", f"{V2}/os-hosts/{ref}"), ("POST", f"{V2}/os-hosts/{ref}/tokens"),
        ("GET", f"/v2/{ref}/servers"),
        ("GET", f"{V2}/os-events?host={ref}"), ("GET", f"{V2}/os-events?server={ref}"),
        ("GET", f"{V2}/os-events?device={ref}"),
        ("GET", f"{V2}/os-pci-devices?host={ref}"), ("GET", f"{V2}/os-pci-stats?host={ref}"),
    ]


def test_hostile_path_and_query_parameters_are_refused(hostile: tuple[Api, str]) -> None:
    api, _ = hostile
    # (A URL carries no lone surrogate: bytes that are not UTF-8 arrive as U+FFFD.)
    for bad in (NUL, "a\x1bb", "a\x85b", "h" * 300, "x" * 5000):
        for method, path in _paths(bad):
            _refused(api, api.admin, method, path)


def test_a_host_token_for_an_over_long_host_name_is_refused(hostile: tuple[Api, str]) -> None:
    api, _ = hostile
    message = _refused(api, api.admin, "POST", f"{V2}/os-hosts/{'h' * 300}/tokens")
    assert "host" in message and "255" in message


SEED_COUNTS = ["²:bigGPU", "①:bigGPU", "\u0661:bigGPU", "2147483648:bigGPU",
               f"{10**20}:bigGPU", f"{'9' * 4000}:bigGPU", "-1:bigGPU", "+1:bigGPU"]
ALIAS_COUNTS = ["bigGPU:²", "bigGPU:①", "bigGPU:2147483648", f"bigGPU:{10**20}"]


def test_counts_must_be_ascii_digits_within_bounds(hostile: tuple[Api, str]) -> None:
    api, _ = hostile
    cases = [("pci_passthrough:pci_flavor", spec) for spec in SEED_COUNTS]
    cases += [("pci_passthrough:pci_flavor_if_available", spec) for spec in SEED_COUNTS]
    cases += [("pci_passthrough:alias", spec) for spec in ALIAS_COUNTS]
    for key, spec in cases:
        message = _refused(api, api.admin, "POST", f"{V2}/flavors/m1/os-extra_specs",
                           json={"extra_specs": {key: spec}})
        assert "count" in message, message
    assert api.ok("GET", f"{V2}/flavors/m1/os-extra_specs")["extra_specs"] == {}
    message = _refused(api, api.admin, "POST", f"{V2}/flavors/m1/os-extra_specs",
                       json={"extra_specs": {"pci_passthrough:pci_flavor": "2000:bigGPU"}})
    assert "count 2000 is more than the 1024 devices a request may ask for" in message


def test_integers_past_the_columns_are_refused(hostile: tuple[Api, str]) -> None:
    api, member = hostile
    for value in (2**31, 2**63, 2**70, -1, -(2**63)):
        _integers_refused(api, member, value)


def _integers_refused(api: Api, member: str, value: int) -> None:
    for field in ("vcpus", "ram", "disk"):
        _refused(api, api.admin, "POST", f"{V2}/flavors", json={"flavor": {
            "name": "big", field: value}})
    _refused(api, api.admin, "POST", f"{V2}/networks", json={"network": {
        "name": "n", "physical_network": "p", "segmentation_id": value}})
    _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
        "name": "x", "flavorRef": "m1", "min_count": value}})
    _refused(api, member, "GET", f"{MEMBER}/servers/vm/console-log?lines={value}")
    _refused(api, api.admin, "GET", f"{V2}/os-events?limit={value}")
    if value < 0:
        _refused(api, member, "POST", f"{MEMBER}/servers/vm/action", json={
            "os-getConsoleOutput": {"length": value - 1}})
    else:
        _refused(api, member, "POST", f"{MEMBER}/servers/vm/action", json={
            "os-getConsoleOutput": {"length": value}})


def test_members_get_4xx_for_hostile_references(hostile: tuple[Api, str]) -> None:
    api, member = hostile
    for bad in (NUL, "x" * 300):
        ref = quote(bad, safe="")
        for method, path in (("GET", f"{MEMBER}/servers/{ref}"),
                             ("DELETE", f"{MEMBER}/ports/{ref}"),
                             ("GET", f"{MEMBER}/networks/{ref}"),
                             ("GET", f"{MEMBER}/os-keypairs/{ref}")):
            _refused(api, member, method, path)
        _refused(api, member, "POST", f"{MEMBER}/servers", json={"server": {
            "name": "x", "flavorRef": "m1", "networks": [{"uuid": bad}]}})
        _refused(api, member, "POST", f"{MEMBER}/ports", json={"port": {
            "network_id": "prod", "name": bad}})


def _store_refusals(api: Api) -> None:
    """Routes that hand the store what it refuses, as a request that slipped past the
    fields' checks would."""
    app = api.client.app
    assert isinstance(app, FastAPI)

    def duplicate_flavor() -> None:
        with app.state.store.write() as session:
            session.add_all([FlavorRow(name="twin"), FlavorRow(name="twin")])

    def nul_text() -> None:
        with app.state.store.write() as session:
            session.add(FlavorRow(name="a\x00b"))

    app.add_api_route("/test/duplicate", duplicate_flavor, methods=["POST"])
    app.add_api_route("/test/nul", nul_text, methods=["POST"])


def test_the_store_s_refusals_are_4xx_in_its_words(hostile: tuple[Api, str], db_url: str
                                                   ) -> None:
    api, _ = hostile
    _store_refusals(api)
    answer = api.call("POST", "/test/duplicate", expect=409)
    message = answer.json()["error"]["message"]
    assert message.startswith("the request clashed with a change made at the same time")
    assert ("UNIQUE constraint failed: flavors.name" in message
            or "Key (name)=(twin) already exists." in message), message
    if db_url.startswith("postgresql"):
        answer = api.call("POST", "/test/nul", expect=400)
        message = answer.json()["error"]["message"]
        assert message.startswith("a value of the request cannot be stored (")
        assert "NUL" in message and message.endswith("; shorten or correct it"), message
