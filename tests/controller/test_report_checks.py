"""Agent reports are checked whole before anything is applied, on both stores: ranges,
lengths, addresses, tags, pool attributes, duplicates, each VF's PF, the device count; a
bad report gets 400 naming its first problems and changes nothing. A full report names
the generation it builds on, so a stale one is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.pci.inventory import MAX_PROBLEMS
from tests.controller.conftest import Api

HOST = "compute-1"
INVENTORY = f"/v2/agent/hosts/{HOST}/inventory"
PF = {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "1572",
      "dev_type": "type-PF", "numa_node": 0, "sriov_totalvfs": 64, "sriov_numvfs": 2}
VF = {"address": "0000:0a:02.0", "vendor_id": "8086", "product_id": "154c",
      "dev_type": "type-VF", "parent_addr": PF["address"], "numa_node": 0}
GPU = {"address": "0000:81:00.0", "vendor_id": "10de", "product_id": "20b0",
       "numa_node": 1, "iommu_group": 40, "vendor_name": "NVIDIA"}


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(tmp_path / "data", db_url=db_url, max_report_devices=50)
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings.admin_token_path.read_text().strip())


def stored(api: Api) -> dict[str, dict[str, Any]]:
    body = api.ok("GET", "/v2/admin/os-pci-devices", params={"host": HOST})
    return {row["device"]["address"]: row["device"] for row in body["pci_devices"]
            if row["host"] == HOST and row["device"]["status"] != "removed"}


def generation(api: Api) -> int:
    return int(api.ok("POST", f"/v2/agent/hosts/{HOST}/heartbeat")["generation"])


@pytest.mark.parametrize(("bad", "named"), [
    ({"numa_node": 2**63}, "numa_node"),
    ({"numa_node": -5}, "numa_node"),
    ({"numa_node": 2**31}, "numa_node"),
    ({"iommu_group": 2**70}, "iommu_group"),
    ({"iommu_group": -1}, "iommu_group"),
    ({"sriov_numvfs": -1}, "sriov_numvfs"),
    ({"sriov_totalvfs": 2**40}, "sriov_totalvfs"),
    ({"vendor_name": "N" * 1_000_000}, "vendor_name"),
    ({"product_name": "x" * 256}, "product_name"),
    ({"driver": "d" * 65}, "driver"),
    ({"dev_class": "0x0300000"}, "dev_class"),
    ({"vendor_id": "10de0"}, "vendor_id"),
    ({"address": "0000:0a:00.9"}, "function"),
    ({"address": "0" * 10_000}, "address"),
    ({"tags": {"evil tag": "x"}}, "evil tag"),
    ({"tags": {"e.group": "v" * 256}}, "e.group"),
    ({"tags": {f"e.t{i}": "x" for i in range(65)}}, "tags"),
    ({"dev_type": "type-VF"}, "parent_addr"),
    ({"dev_type": "type-VF", "parent_addr": GPU["address"]}, "parent_addr"),
    ({"dev_type": "type-VF", "parent_addr": VF["address"]}, "not a PF"),
])
def test_one_bad_device_among_good_ones_refuses_the_report_and_changes_nothing(
        api: Api, bad: dict[str, Any], named: str) -> None:
    token = api.agent(HOST)
    api.ok("PUT", INVENTORY, token, json={"devices": [PF, VF]})
    before, generation_before = stored(api), generation(api)
    answer = api.call("PUT", INVENTORY, token, json={"devices": [
        {**PF, "numa_node": 1}, VF, {**GPU, **bad}]})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert named in message and "nothing of it was applied" in message
    assert len(message) < 2000  # a 1 MB name is not echoed back
    assert stored(api) == before and generation(api) == generation_before


def test_a_duplicate_address_and_a_vf_whose_parent_is_a_vf_are_refused(api: Api) -> None:
    token = api.agent(HOST)
    answer = api.call("PUT", INVENTORY, token, json={"devices": [
        PF, VF, {**VF, "product_id": "154d"},
        {**VF, "address": "0000:0a:02.1", "parent_addr": "0000:0a:02.1"}]})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "device 0000:0a:02.0: reported twice" in message
    assert "device 0000:0a:02.1: parent_addr names the VF itself" in message
    assert stored(api) == {}


def test_vfs_whose_pf_the_host_does_not_offer_are_fine(api: Api) -> None:
    # A whitelist that takes a PF's VFs and not the PF itself is the usual case.
    api.ok("PUT", INVENTORY, api.agent(HOST), json={"devices": [VF]})
    assert set(stored(api)) == {VF["address"]}


def test_the_first_problems_are_listed_each_with_device_and_field(api: Api) -> None:
    devices = [{**GPU, "address": f"0000:82:{slot:02x}.0", "numa_node": -1}
               for slot in range(20)]
    answer = api.call("PUT", INVENTORY, api.agent(HOST), json={"devices": devices})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.count("numa_node -1 is out of range") == MAX_PROBLEMS
    assert "device 0000:82:00.0: numa_node" in message and "and more" in message


@pytest.mark.parametrize("attr", ["address", "evil attr", "e.*x", "numa_node"])
def test_pool_attrs_are_only_what_pools_may_group_by(api: Api, attr: str) -> None:
    token = api.agent(HOST)
    answer = api.call("PUT", INVENTORY, token, json={"devices": [GPU],
                                                     "pool_attrs": ["vendor_id", attr]})
    assert answer.status_code == 400, answer.text
    assert "pool attribute" in answer.text
    assert stored(api) == {}
    api.ok("PUT", INVENTORY, token, json={"devices": [GPU], "pool_attrs": [
        "vendor_id", "device_id", "physical_network", "e.group", "e.*", "dev_type"]})


def test_a_report_past_the_device_limit_is_refused(api: Api) -> None:
    devices = [{**GPU, "address": f"0000:{bus:02x}:00.0"} for bus in range(51)]
    answer = api.call("PUT", INVENTORY, api.agent(HOST), json={"devices": devices})
    assert answer.status_code == 400
    assert "51 devices, more than the 50" in answer.text
    delta = {"base_generation": 0, "delta": {"added": devices}}
    assert api.call("PATCH", INVENTORY, api.agent(HOST), json=delta).status_code == 400
    assert stored(api) == {}


def test_a_bad_delta_changes_nothing(api: Api) -> None:
    token = api.agent(HOST)
    base = api.ok("PUT", INVENTORY, token, json={"devices": [PF, VF]})["generation"]
    before = stored(api)
    for delta in ({"added": [GPU, {**GPU, "address": "0000:81:00.1", "numa_node": 5000}]},
                  {"added": [GPU], "removed": ["not-an-address"]},
                  {"removed": [GPU["address"]], "changed": [{**PF, "dev_type": "type-PCI"}]},
                  {"added": [GPU, GPU]}):
        answer = api.call("PATCH", INVENTORY, token, json={"base_generation": base,
                                                           "delta": delta})
        assert answer.status_code == 400, (delta, answer.text)
        assert stored(api) == before and generation(api) == base
    # The PF may stop being offered while its VF stays: the VF's parent is then absent.
    api.ok("PATCH", INVENTORY, token, json={"base_generation": base,
                                            "delta": {"removed": [PF["address"]]}})
    assert set(stored(api)) == {VF["address"]}


@pytest.mark.parametrize("resources", [
    {"cpu_allocation_ratio": 1e300},
    {"cpu_allocation_ratio": 0},
    {"cpus": [{"id": 2**70, "node": 0, "socket": 0}]},
    {"cpus": [{"id": 0, "node": 2**40, "socket": 0}]},
    {"cpus": [{"id": 0, "node": 0, "socket": -1}]},
    {"numa": [{"id": 0, "memory_mb": 2**63}]},
    {"numa": [{"id": 0, "memory_mb": 1024, "hugepages": {"2048": -1}}]},
    {"disk_gb": 2**62},
    {"reserved_host_memory_mb": -3},
    {"ram_allocation_ratio": 1000, "numa": [{"id": 0, "memory_mb": 2**30}]},
    {"networks": ["p" * 256]},
])
def test_host_resources_out_of_range_are_refused(api: Api, resources: dict[str, Any]) -> None:
    body = {"cpus": [{"id": 0, "node": 0, "socket": 0}],
            "numa": [{"id": 0, "memory_mb": 1024}], **resources}
    answer = api.call("PUT", INVENTORY, api.agent(HOST),
                      json={"devices": [GPU], "resources": body})
    assert 400 <= answer.status_code < 500, answer.text
    assert "host resources" in answer.text or "resources" in answer.text
    assert stored(api) == {}


def test_a_stale_full_report_is_refused_and_one_without_a_generation_is_taken(api: Api) -> None:
    token = api.agent(HOST)
    first = api.ok("PUT", INVENTORY, token, json={"base_generation": 0,
                                                  "devices": [PF, VF, GPU]})["generation"]
    removed = api.ok("PUT", INVENTORY, token, json={"base_generation": first,
                                                    "devices": [PF, VF]})["generation"]
    # The first report again, replayed or delayed: it would bring the GPU back.
    answer = api.call("PUT", INVENTORY, token, json={"base_generation": first,
                                                     "devices": [PF, VF, GPU]})
    assert answer.status_code == 409
    assert f"generation {removed}" in answer.json()["error"]["message"]
    assert set(stored(api)) == {PF["address"], VF["address"]}
    # An operator's tool (or an older agent) that names no generation is taken as is.
    api.ok("PUT", INVENTORY, token, json={"devices": [GPU]})
    assert set(stored(api)) == {GPU["address"]}
    # A host never reported is at generation 0.
    other = "/v2/agent/hosts/compute-2/inventory"
    assert api.call("PUT", other, api.agent("compute-2"),
                    json={"base_generation": 3, "devices": [GPU]}).status_code == 409
