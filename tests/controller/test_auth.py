"""Who may do what: members of a project, admins, and agents of a host."""

from __future__ import annotations

import pytest

from tests.controller.conftest import Api


@pytest.fixture
def world(api: Api) -> dict[str, str]:
    """Projects alpha and beta each with a server and a port; an agent for host c1."""
    api.ok("POST", "/v2/admin/flavors", json={"flavor": {"name": "m1.small"}})
    api.ok("POST", "/v2/admin/networks", json={"network": {
        "name": "prod", "physical_network": "physnet1", "segmentation_id": 10}})
    ids: dict[str, str] = {}
    for project in ("alpha", "beta"):
        token = ids[project] = api.member(project)
        base = f"/v2/{project}"
        ids[f"{project}-server"] = api.ok("POST", f"{base}/servers", token, json={"server": {
            "name": f"{project}-vm", "flavorRef": "m1.small"}})["server"]["id"]
        ids[f"{project}-port"] = api.ok("POST", f"{base}/ports", token, json={"port": {
            "network_id": "prod"}})["port"]["id"]
    ids["agent"] = api.agent("c1")
    return ids


def test_no_token_or_an_unknown_one_is_401(api: Api) -> None:
    answer = api.client.get("/v2/admin/flavors")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in answer.json()["error"]["message"]
    api.call("GET", "/v2/admin/flavors", "pt_made-up", expect=401)


def test_a_member_sees_only_its_projects_servers_and_ports(api: Api, world: dict[str, str]
                                                           ) -> None:
    alpha = world["alpha"]
    servers = api.ok("GET", "/v2/alpha/servers", alpha)["servers"]
    ports = api.ok("GET", "/v2/alpha/ports", alpha, params={"all_projects": True})["ports"]
    assert [s["id"] for s in servers] == [world["alpha-server"]]
    assert [p["id"] for p in ports] == [world["alpha-port"]]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("kind", ["server", "port"])
def test_a_member_cannot_touch_another_projects_resources(
        api: Api, world: dict[str, str], method: str, kind: str) -> None:
    other = world[f"beta-{kind}"]
    answer = api.call(method, f"/v2/alpha/{kind}s/{other}", world["alpha"], expect=404)
    assert answer.json()["error"]["message"].startswith(f"no {kind} ")
    api.call(method, f"/v2/beta/{kind}s/{other}", world["alpha"], expect=403)
    api.call("GET", f"/v2/beta/{kind}s/{other}", world["beta"], expect=200)


def test_a_member_cannot_boot_onto_another_projects_port(api: Api, world: dict[str, str]
                                                         ) -> None:
    body = {"server": {"name": "sneaky", "flavorRef": "m1.small",
                       "networks": [{"port": world["beta-port"]}]}}
    api.call("POST", "/v2/alpha/servers", world["alpha"], json=body, expect=404)
    port = api.ok("GET", f"/v2/beta/ports/{world['beta-port']}", world["beta"])["port"]
    assert port["device_id"] is None


ADMIN_ONLY = [
    ("POST", "/os-pci-flavors", {"pci-flavor": {"name": "mine"}}),
    ("PUT", "/os-pci-flavors/x", {"pci-flavor": {"vendor_id": "8086"}}),
    ("DELETE", "/os-pci-flavors/x", None),
    ("GET", "/os-pci-flavor/0", None),
    ("POST", "/flavors", {"flavor": {"name": "m1.mine"}}),
    ("POST", "/flavors/m1.small/os-extra_specs", {"extra_specs": {"a": "b"}}),
    ("DELETE", "/flavors/m1.small", None),
    ("POST", "/images", {"image": {"name": "img"}}),
    ("POST", "/networks", {"network": {"name": "n", "physical_network": "p"}}),
    ("DELETE", "/networks/prod", None),
    ("GET", "/os-hosts", None),
    ("GET", "/os-hosts/c1", None),
    ("POST", "/os-hosts/c1/tokens", None),
    ("GET", "/os-pci-devices", None),
    ("GET", "/os-pci-stats", None),
    ("POST", "/tokens", {"token": {"project": "alpha"}}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
def test_a_member_cannot_use_admin_resources(api: Api, world: dict[str, str], method: str,
                                            path: str, body: object) -> None:
    answer = api.call(method, f"/v2/alpha{path}", world["alpha"], json=body, expect=403)
    assert "needs an admin token; this is a member token of alpha" in (
        answer.json()["error"]["message"])


def test_a_member_reads_the_catalog_it_boots_from(api: Api, world: dict[str, str]) -> None:
    alpha = world["alpha"]
    assert [f["name"] for f in api.ok("GET", "/v2/alpha/flavors", alpha)["flavors"]] == [
        "m1.small"]
    assert [n["name"] for n in api.ok("GET", "/v2/alpha/networks", alpha)["networks"]] == [
        "prod"]
    api.ok("GET", "/v2/alpha/os-pci-flavors", alpha)


def test_members_do_not_see_networks_of_other_projects(api: Api, world: dict[str, str]
                                                        ) -> None:
    api.ok("POST", "/v2/admin/networks", json={"network": {
        "name": "beta-only", "physical_network": "physnet2", "project": "beta"}})
    alpha_sees = api.ok("GET", "/v2/alpha/networks", world["alpha"])["networks"]
    beta_sees = api.ok("GET", "/v2/beta/networks", world["beta"])["networks"]
    assert [n["name"] for n in alpha_sees] == ["prod"]
    assert [n["name"] for n in beta_sees] == ["beta-only", "prod"]
    api.call("GET", "/v2/alpha/networks/beta-only", world["alpha"], expect=404)


REPORT = {"devices": [{"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "0001"}]}


def test_an_agent_reports_only_its_own_host(api: Api, world: dict[str, str]) -> None:
    agent = world["agent"]
    api.ok("PUT", "/v2/agent/hosts/c1/inventory", agent, json=REPORT)
    api.ok("POST", "/v2/agent/hosts/c1/heartbeat", agent)
    answer = api.call("PUT", "/v2/agent/hosts/c2/inventory", agent, json=REPORT, expect=403)
    assert "cannot report for host c2" in answer.json()["error"]["message"]
    api.call("POST", "/v2/agent/hosts/c2/heartbeat", agent, expect=403)
    hosts = api.ok("GET", "/v2/admin/os-hosts")["hosts"]
    assert [h["name"] for h in hosts] == ["c1"]


def test_an_agent_token_does_nothing_else(api: Api, world: dict[str, str]) -> None:
    agent = world["agent"]
    answer = api.call("GET", "/v2/admin/servers", agent, expect=403)
    assert "may only report its host's inventory" in answer.json()["error"]["message"]
    api.call("GET", "/v2/admin/os-pci-flavors", agent, expect=403)


def test_members_cannot_report_inventory(api: Api, world: dict[str, str]) -> None:
    api.call("PUT", "/v2/agent/hosts/c1/inventory", world["alpha"], json=REPORT, expect=403)


def test_an_admin_sees_every_project(api: Api, world: dict[str, str]) -> None:
    server = api.ok("GET", f"/v2/admin/servers/{world['beta-server']}")["server"]
    assert server["project_id"] == "beta"
    everything = api.ok("GET", "/v2/admin/servers", params={"all_projects": True})["servers"]
    assert len(everything) == 2
    assert api.ok("GET", "/v2/admin/servers")["servers"] == []
