"""Boot through the controller onto a host agent with a libvirt test:/// connection and a
realistic simulated sysfs: flavor GPUs, a direct VF on a VLAN network, a macvtap port and a
direct-physical PF; then failures (libvirt define refused, a VF refused, an agent killed
mid-boot) leave no device claimed and no VF configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from passthru.host.agent import Agent
from passthru.host.attach import Attacher, domain_name
from passthru.host.config import offered
from passthru.host.domain_xml import DomainSpec, build_domain_xml, validate_domain_xml
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.link import HttpLink
from passthru.host.worker import OrderWorker
from passthru.pci.work import SpawnOrder
from tests.controller.conftest import Api
from tests.host.simhost import GPUS, PF1, WHOLE_PF, RecordingApplier, SimHost, make_host

V2 = "/v2/admin"


class Compute:
    """One host as its agent runs it: inventory link, order worker, libvirt, VF applier."""

    def __init__(self, api: Api, sim: SimHost, driver: LibvirtDriver) -> None:
        self.api, self.sim, self.driver = api, sim, driver
        self.applier = RecordingApplier()
        api.client.headers["Authorization"] = f"Bearer {api.agent('compute-1')}"
        self.link = HttpLink(api.client, "compute-1")
        config = sim.config()
        self.agent = Agent(scan=lambda: offered(config), link=self.link,
                           pool_attrs=config.pool_attrs)
        self.agent.report_once()
        self.worker = self.restart()

    def attacher(self) -> Attacher:
        return self.sim.attacher(self.driver, self.applier)

    def restart(self) -> OrderWorker:
        """A fresh worker, as after an agent restart: it reconciles first."""
        worker = OrderWorker(self.link, self.attacher())
        worker.start()
        return worker


@pytest.fixture
def compute(api: Api, tmp_path: Path) -> Iterator[Compute]:
    sim = make_host(tmp_path)
    with LibvirtDriver(sim.uri) as driver:
        yield Compute(api, sim, driver)


def admin(api: Api, method: str, path: str, **body: Any) -> Any:
    return api.ok(method, V2 + path, json=body or None)


def seed_catalog(api: Api) -> None:
    """A GPU flavor (2 A100s), a small one, a VLAN network and a flat one."""
    admin(api, "POST", "/os-pci-flavors", **{"pci-flavor": {"name": "a100",
                                                             "vendor_id": "10de"}})
    admin(api, "POST", "/flavors", flavor={"name": "m1.gpu", "vcpus": 2, "ram": 1024})
    admin(api, "POST", "/flavors/m1.gpu/os-extra_specs",
          extra_specs={"pci_passthrough:pci_flavor": "2:a100"})
    admin(api, "POST", "/flavors", flavor={"name": "m1.small"})
    admin(api, "POST", "/networks", network={"name": "prod", "physical_network": "physnet1",
                                             "segmentation_id": 100})
    admin(api, "POST", "/networks", network={"name": "ext", "physical_network": "physnet2"})


@pytest.fixture
def catalog(api: Api, compute: Compute) -> Api:
    seed_catalog(api)
    return api


def boot(api: Api, name: str, flavor: str = "m1.small", **nic: str) -> dict[str, Any]:
    networks = [nic] if nic else []
    body = {"server": {"name": name, "flavorRef": flavor, "networks": networks}}
    return api.ok("POST", f"{V2}/servers", json=body)["server"]


def server(api: Api, name: str) -> dict[str, Any]:
    return api.ok("GET", f"{V2}/servers/{name}")["server"]


def device_statuses(api: Api) -> dict[str, str]:
    listed = api.ok("GET", f"{V2}/os-pci-devices")["pci_devices"]
    return {row["device"]["address"]: row["device"]["status"] for row in listed}


def held(api: Api) -> dict[str, str]:
    return {a: s for a, s in device_statuses(api).items() if s != "available"}


def hostdevs(xml: str) -> set[str]:
    tree = etree.fromstring(xml.encode())
    found = set()
    for address in tree.iterfind(".//devices/*/source/address"):
        found.add("{:04x}:{:02x}:{:02x}.{:x}".format(
            *(int(address.attrib[k], 16) for k in ("domain", "bus", "slot", "function"))))
    return found


def test_every_kind_of_vm_runs_in_libvirt_with_its_devices(catalog: Api,
                                                           compute: Compute) -> None:
    gpu = boot(catalog, "vm-gpu", "m1.gpu")
    direct = boot(catalog, "vm-direct", uuid="prod", vnic_type="direct")
    macvtap = boot(catalog, "vm-macvtap", uuid="prod", vnic_type="macvtap")
    whole = boot(catalog, "vm-pf", uuid="ext", vnic_type="direct-physical")
    assert {s["status"] for s in (gpu, direct, macvtap, whole)} == {"BUILD"}
    assert compute.worker.run_orders() == 4

    running = {s["name"]: s for s in catalog.ok("GET", f"{V2}/servers")["servers"]}
    assert {n: s["status"] for n, s in running.items()} == dict.fromkeys(running, "ACTIVE")
    states = {d.name: d for d in compute.driver.domains()}
    for name, shown in running.items():
        domain = states[domain_name(shown["id"])]
        assert domain.active, name
        xml = compute.driver.xml(domain.name)
        validate_domain_xml(xml)
        validate_domain_xml(server(catalog, name)["domain_xml"])
        claimed = {d["address"] for r in shown["pci_requests"] for d in r["devices"]}
        if name != "vm-macvtap":  # macvtap rides on the VF's netdev, not a hostdev
            assert hostdevs(xml) == claimed, name
    assert hostdevs(compute.driver.xml(domain_name(gpu["id"]))) == set(GPUS)
    assert hostdevs(compute.driver.xml(domain_name(whole["id"]))) == {WHOLE_PF}
    # The direct VF got the network's VLAN and the port's MAC before the domain started.
    vf = running["vm-direct"]["pci_requests"][0]["devices"][0]
    assert vf["parent_addr"] == PF1
    config = compute.applier.configured[vf["address"]]
    assert config.vlan == 100
    port = catalog.ok("GET", f"{V2}/ports/{running['vm-direct']['ports'][0]}")["port"]
    assert config.mac == port["mac_address"]
    assert port["binding:vif_type"] == "hw_veb"
    assert port["binding:profile"]["pci_slot"] == vf["address"]
    assert port["binding:profile"]["physical_network"] == "physnet1"
    # Only VFs of the dual-port card are offered (not its PFs), so nothing is blocked.
    assert set(held(catalog).values()) == {"allocated"}

    for name in running:
        catalog.call("DELETE", f"{V2}/servers/{name}", expect=204)
    assert compute.worker.run_orders() == 4
    assert compute.driver.domains() == []
    assert held(catalog) == {}
    assert compute.applier.configured == {}


def test_a_refused_vf_fails_the_server_and_frees_everything(catalog: Api,
                                                             compute: Compute) -> None:
    vm = boot(catalog, "vm", uuid="prod", vnic_type="direct")
    vf = vm["pci_requests"][0]["devices"][0]["address"]
    compute.applier.refuse = frozenset({vf})
    compute.worker.run_orders()
    failed = server(catalog, "vm")
    assert failed["status"] == "ERROR"
    assert f"VF {vf}" in failed["fault"] and "invalid argument" in failed["fault"]
    assert failed["host"] is None
    assert compute.driver.domains() == []
    assert held(catalog) == {}
    assert compute.applier.configured == {}
    events = catalog.ok("GET", f"{V2}/os-events", params={"server": vm["id"]})["events"]
    assert "server-error" in {e["kind"] for e in events}


def test_a_refused_define_fails_the_server_and_leaves_the_other_domain(
        catalog: Api, compute: Compute) -> None:
    vm = boot(catalog, "vm", "m1.gpu")
    # Someone else's domain already has the name (with another uuid): define is refused.
    squatter = build_domain_xml(DomainSpec(name=domain_name(vm["id"]),
                                           uuid="6f1d6a43-0000-4000-8000-000000000001",
                                           memory_mib=64, vcpus=1))
    compute.driver.define(squatter)
    compute.worker.run_orders()
    failed = server(catalog, "vm")
    assert failed["status"] == "ERROR" and "define" in failed["fault"]
    assert [d.uuid for d in compute.driver.domains()] == ["6f1d6a43-0000-4000-8000-000000000001"]
    assert held(catalog) == {}


def test_an_agent_killed_mid_boot_starts_over_and_leaves_nothing_behind(
        catalog: Api, compute: Compute) -> None:
    vm = boot(catalog, "vm", uuid="prod", vnic_type="direct")
    # The agent spawns the domain and configures the VF, then dies before it can answer.
    order: SpawnOrder = compute.link.orders().spawn[0]
    assert compute.attacher().spawn(order).ok
    assert server(catalog, "vm")["status"] == "BUILD"
    # Restarted: the half-made domain is removed and its VF reset, then spawned afresh.
    worker = compute.restart()
    assert compute.driver.domains() == []
    assert compute.applier.configured == {}
    worker.run_orders()
    assert server(catalog, "vm")["status"] == "ACTIVE"
    assert [d.name for d in compute.driver.domains()] == [domain_name(vm["id"])]
    catalog.call("DELETE", f"{V2}/servers/vm", expect=204)
    worker.run_orders()
    assert held(catalog) == {} and compute.applier.configured == {}


def test_a_restarted_agent_keeps_running_servers_and_reports_lost_ones(
        catalog: Api, compute: Compute) -> None:
    kept = boot(catalog, "kept", "m1.gpu")
    gone = boot(catalog, "gone", uuid="prod", vnic_type="direct")
    compute.worker.run_orders()
    before = held(catalog)
    # While the agent is away, one domain disappears behind its back.
    compute.driver.stop(domain_name(gone["id"]))
    compute.driver.undefine(domain_name(gone["id"]))
    compute.restart()
    assert server(catalog, "kept")["status"] == "ACTIVE"
    lost = server(catalog, "gone")
    assert lost["status"] == "ERROR" and "domain is gone" in lost["fault"]
    # The kept server's devices stay allocated; the lost one's are free again.
    assert held(catalog) == {a: s for a, s in before.items() if a in GPUS}
    assert [d.name for d in compute.driver.domains()] == [domain_name(kept["id"])]


def test_devices_if_available_never_block_a_boot(catalog: Api, compute: Compute) -> None:
    admin(catalog, "POST", "/os-pci-flavors", **{"pci-flavor": {
        "name": "t4", "vendor_id": "10de", "product_id": "1eb8"}})  # no host has one
    admin(catalog, "POST", "/flavors", flavor={"name": "m1.maybe"})
    admin(catalog, "POST", "/flavors/m1.maybe/os-extra_specs", extra_specs={
        "pci_passthrough:pci_flavor_if_available": "1:t4;1:a100"})
    vm = boot(catalog, "vm", "m1.maybe")
    assert vm["status"] == "BUILD"
    got = {r["request"]["alternatives"][0]: [d["address"] for d in r["devices"]]
           for r in vm["pci_requests"]}
    assert len(got["a100"]) == 1 and got["t4"] == []
    compute.worker.run_orders()
    assert server(catalog, "vm")["status"] == "ACTIVE"
    assert hostdevs(compute.driver.xml(domain_name(vm["id"]))) == set(got["a100"])
