"""Flavors, images, networks, ports and servers through the API."""

from __future__ import annotations

import pytest

from tests.controller.conftest import Api

V2 = "/v2/admin"


@pytest.fixture
def catalog(api: Api) -> Api:
    """PCI flavors bigGPU, bigGPU2, QA; flavor m1.gpu asking for a GPU and a QA card;
    network prod on physnet1, VLAN 100."""
    for name in ("bigGPU", "bigGPU2", "QA"):
        api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {"name": name}})
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.gpu", "vcpus": 4}})
    api.ok("POST", f"{V2}/flavors/m1.gpu/os-extra_specs", json={"extra_specs": {
        "pci_passthrough:pci_flavor": "1:bigGPU,bigGPU2;1:QA",
        "hw:pci_numa_affinity_policy": "required"}})
    api.ok("POST", f"{V2}/networks", json={"network": {
        "name": "prod", "physical_network": "physnet1", "segmentation_id": 100}})
    return api


def test_extra_specs_must_parse_and_name_known_pci_flavors(catalog: Api) -> None:
    path = f"{V2}/flavors/m1.gpu/os-extra_specs"
    answer = catalog.call("POST", path, json={"extra_specs": {
        "pci_passthrough:pci_flavor": "1:bigGPU;0:QA"}}, expect=400)
    message = answer.json()["error"]["message"]
    assert message.startswith("flavor m1.gpu: count must be at least 1")
    assert "^" in message  # points into the spec
    answer = catalog.call("POST", path, json={"extra_specs": {
        "pci_passthrough:pci_flavor": "2:NvGPU"}}, expect=400)
    assert "unknown PCI flavor 'NvGPU'" in answer.json()["error"]["message"]
    stored = catalog.ok("GET", path)["extra_specs"]
    assert stored["pci_passthrough:pci_flavor"] == "1:bigGPU,bigGPU2;1:QA"


def test_networks_take_vlan_from_the_segmentation_id_and_refuse_clashes(catalog: Api) -> None:
    prod = catalog.ok("GET", f"{V2}/networks/prod")["network"]
    assert (prod["network_type"], prod["segmentation_id"]) == ("vlan", 100)
    flat = catalog.ok("POST", f"{V2}/networks", json={"network": {
        "name": "flat1", "physical_network": "physnet2"}})["network"]
    assert flat["network_type"] == "flat"
    answer = catalog.call("POST", f"{V2}/networks", json={"network": {
        "name": "again", "physical_network": "physnet1", "segmentation_id": 100}}, expect=409)
    assert answer.json()["error"]["message"] == (
        "VLAN 100 of physical network physnet1 is network prod already")
    answer = catalog.call("POST", f"{V2}/networks", json={"network": {
        "name": "bad", "physical_network": "physnet3", "network_type": "flat",
        "segmentation_id": 7}}, expect=400)
    assert "is flat but has segmentation_id 7" in answer.json()["error"]["message"]


def test_a_network_with_ports_cannot_be_deleted(catalog: Api) -> None:
    port = catalog.ok("POST", f"{V2}/ports", json={"port": {
        "network_id": "prod", "name": "p1", "binding:vnic_type": "direct"}})["port"]
    assert port["binding:vnic_type"] == "direct"
    assert port["mac_address"].startswith("02:")
    answer = catalog.call("DELETE", f"{V2}/networks/prod", expect=409)
    assert answer.json()["error"]["message"] == (
        "network prod still has 1 port(s) (p1); delete them (or their servers) first")
    catalog.call("DELETE", f"{V2}/ports/{port['id']}", expect=204)
    catalog.call("DELETE", f"{V2}/networks/prod", expect=204)


@pytest.mark.parametrize(("mac", "why"), [
    ("ff:ff:ff:ff:ff:ff", "is the broadcast address"),
    ("01:00:5E:00:00:01", "is a multicast address"),
    ("00-00-00-00-00-00", "is all zeros"),
])
def test_ports_refuse_macs_no_interface_can_own(catalog: Api, mac: str, why: str) -> None:
    answer = catalog.call("POST", f"{V2}/ports", json={"port": {
        "network_id": "prod", "binding:vnic_type": "direct", "mac_address": mac}}, expect=400)
    message = answer.json()["error"]["message"]
    assert message.startswith(f"mac address {mac!r} {why}")
    assert "needs a unicast MAC, whose first octet is even, e.g. 'fa:16:3e:12:34:56'" in message
    assert catalog.ok("GET", f"{V2}/ports")["ports"] == []
    port = catalog.ok("POST", f"{V2}/ports", json={"port": {
        "network_id": "prod", "mac_address": "FA-16-3E-00-00-01"}})["port"]
    assert port["mac_address"] == "fa:16:3e:00:00:01"


def test_boot_turns_the_flavor_spec_and_sriov_nics_into_pci_requests(catalog: Api) -> None:
    catalog.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {"name": "phyX_NIC"}})
    body = {"server": {"name": "vm1", "flavorRef": "m1.gpu", "networks": [
        {"uuid": "prod", "vnic_type": "direct"},
        {"uuid": "prod", "vnic_type": "macvtap", "pci_flavor": "phyX_NIC"},
        {"uuid": "prod"}]}}
    answer = catalog.call("POST", f"{V2}/servers", json=body, expect=202)
    server = answer.json()["server"]
    # No host has reported devices: the server is kept, in ERROR, with the reason.
    assert (server["status"], server["host"], server["flavor"]) == ("ERROR", None, "m1.gpu")
    assert server["fault"].startswith("no host has 1 free device of pci flavor")
    assert len(server["ports"]) == 3
    requests = [(r["request"]["count"], r["request"]["alternatives"], r["request"]["source"],
                 r["request"]["physical_network"], r["request"]["dev_type"],
                 r["request"]["numa_policy"], r["source_flavor"])
                for r in server["pci_requests"]]
    assert requests == [
        (1, ["bigGPU", "bigGPU2"], "flavor", None, None, "required", "m1.gpu"),
        (1, ["QA"], "flavor", None, None, "required", "m1.gpu"),
        (1, [], "port", "physnet1", "type-VF", "required", None),
        (1, ["phyX_NIC"], "port", "physnet1", "type-VF", "required", None),
    ]
    ids = {r["request"]["request_id"] for r in server["pci_requests"]}
    assert len(ids) == 4
    ports = catalog.ok("GET", f"{V2}/ports")["ports"]
    assert {p["device_id"] for p in ports} == {server["id"]}


def test_the_image_narrows_the_alternatives_or_refuses(catalog: Api) -> None:
    catalog.ok("POST", f"{V2}/images", json={"image": {
        "name": "gpu2-only", "properties": {"pci_passthrough:supported": "bigGPU2,QA"}}})
    catalog.ok("POST", f"{V2}/images", json={"image": {
        "name": "no-gpu", "properties": {"pci_passthrough:supported": "QA"}}})
    body = {"server": {"name": "vm", "flavorRef": "m1.gpu", "imageRef": "gpu2-only"}}
    server = catalog.ok("POST", f"{V2}/servers", json=body)["server"]
    assert [r["request"]["alternatives"] for r in server["pci_requests"]] == [["bigGPU2"],
                                                                             ["QA"]]
    body["server"]["imageRef"] = "no-gpu"
    answer = catalog.call("POST", f"{V2}/servers", json=body, expect=400)
    assert "image no-gpu supports only PCI flavors QA" in answer.json()["error"]["message"]
    assert len(catalog.ok("GET", f"{V2}/servers")["servers"]) == 1  # nothing half-made


def test_delete_removes_the_ports_a_boot_made_and_keeps_the_tenants(catalog: Api) -> None:
    mine = catalog.ok("POST", f"{V2}/ports", json={"port": {"network_id": "prod"}})["port"]
    body = {"server": {"name": "vm", "flavorRef": "m1.gpu", "networks": [
        {"port": mine["id"]}, {"uuid": "prod", "vnic_type": "direct"}]}}
    server = catalog.ok("POST", f"{V2}/servers", json=body)["server"]
    again = catalog.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm2", "flavorRef": "m1.gpu", "networks": [{"port": mine["id"]}]}}, expect=409)
    assert "in use by server" in again.json()["error"]["message"]
    catalog.call("DELETE", f"{V2}/flavors/m1.gpu", expect=409)
    catalog.call("DELETE", f"{V2}/servers/vm", expect=204)
    catalog.call("GET", f"{V2}/servers/{server['id']}", expect=404)
    ports = catalog.ok("GET", f"{V2}/ports")["ports"]
    assert [(p["id"], p["device_id"]) for p in ports] == [(mine["id"], None)]
    catalog.call("DELETE", f"{V2}/flavors/m1.gpu", expect=204)


def test_unknown_references_name_what_is_missing(catalog: Api) -> None:
    answer = catalog.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m9.huge"}}, expect=404)
    assert answer.json() == {"error": {
        "code": 404, "kind": "not_found", "title": "Not Found",
        "message": "no flavor 'm9.huge' (list them with passthru flavor-list)"}}
    answer = catalog.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "networks": [{"uuid": "nowhere"}]}}, expect=404)
    assert "no network 'nowhere'" in answer.json()["error"]["message"]
    answer = catalog.call("POST", f"{V2}/servers", json={"server": {"name": "vm"}}, expect=422)
    assert "server.flavorRef: Field required" in answer.json()["error"]["message"]
    answer = catalog.call("GET", "/v2/nothing-here", expect=404)
    assert answer.json()["error"]["code"] == 404


def test_hosts_devices_and_stats_follow_the_reports(api: Api) -> None:
    devices = [{"address": f"0000:0a:10.{i}", "vendor_id": "0x8086", "product_id": "154C",
                "dev_type": "type-VF", "parent_addr": "0000:0a:00.0",
                "tags": {"physical_network": "physnet1"}} for i in range(3)]
    accepted = api.ok("PUT", "/v2/agent/hosts/c1/inventory", json={"devices": devices})
    assert accepted == {"host": "c1", "generation": 1}
    api.ok("POST", "/v2/agent/hosts/c1/heartbeat")
    hosts = api.ok("GET", f"{V2}/os-hosts")["hosts"]
    assert [(h["name"], h["status"], h["devices"], h["free"]) for h in hosts] == [
        ("c1", "up", 3, 3)]
    listed = api.ok("GET", f"{V2}/os-pci-devices", params={"host": "c1"})["pci_devices"]
    assert [d["device"]["vendor_id"] for d in listed] == ["8086"] * 3
    assert listed[0]["device"]["tags"] == {"e.physical_network": "physnet1"}
    stats = api.ok("GET", f"{V2}/os-pci-stats")["pci_stats"]
    assert [(s["attrs"], s["count"], s["free"], s["used"]) for s in stats] == [
        ({"vendor_id": "8086", "product_id": "154c", "e.physical_network": "physnet1"},
         3, 3, 0)]
    delta = {"base_generation": 1, "delta": {"removed": ["0000:0a:10.2"]}}
    assert api.ok("PATCH", "/v2/agent/hosts/c1/inventory", json=delta)["generation"] == 2
    stale = api.call("PATCH", "/v2/agent/hosts/c1/inventory", json=delta, expect=409)
    assert "send a full report" in stale.json()["error"]["message"]
    bad = api.call("PUT", "/v2/agent/hosts/c1/inventory", json={"devices": [
        {"address": "0000:0a:10.9", "vendor_id": "8086", "product_id": "1"}]}, expect=400)
    assert "function 9" in bad.json()["error"]["message"]


def test_delete_frees_the_servers_devices_and_unblocks_their_relatives(catalog: Api) -> None:
    pf = {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "1572",
          "dev_type": "type-PF", "tags": {"e.physical_network": "physnet1"}}
    vf = {**pf, "address": "0000:0a:02.0", "product_id": "154c", "dev_type": "type-VF",
          "parent_addr": "0000:0a:00.0"}
    catalog.ok("PUT", "/v2/agent/hosts/c1/inventory", json={"devices": [pf, vf]})
    catalog.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.net"}})
    server = catalog.ok("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1.net",
        "networks": [{"uuid": "prod", "vnic_type": "direct"}]}})["server"]
    # The scheduler placed it on the only host and claimed the VF there.
    assert (server["status"], server["host"]) == ("BUILD", "c1")

    def statuses() -> dict[str, str]:
        listed = catalog.ok("GET", f"{V2}/os-pci-devices")["pci_devices"]
        return {d["device"]["address"]: d["device"]["status"] for d in listed}

    assert statuses() == {pf["address"]: "unavailable", vf["address"]: "claimed"}
    shown = catalog.ok("GET", f"{V2}/servers/vm")["server"]
    assert [d["address"] for d in shown["pci_requests"][0]["devices"]] == [vf["address"]]
    used = {s["dev_type"]: s["used"] for s in catalog.ok("GET", f"{V2}/os-pci-stats")[
        "pci_stats"]}
    assert used == {"type-PF": 0, "type-VF": 1}
    catalog.call("DELETE", f"{V2}/servers/vm", expect=204)
    assert statuses() == {pf["address"]: "available", vf["address"]: "available"}
