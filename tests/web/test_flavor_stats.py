"""PCI flavor stats: each flavor's devices across the fleet, as the fleet page shows them."""

from __future__ import annotations

from typing import Any

from tests.controller.conftest import Api
from tests.web.fleet import place, silence

V2 = "/v2/admin"
GPU_ATTRS = ["vendor_id", "product_id", "e.group"]


def gpu(address: str, product_id: str, numa_node: int) -> dict[str, Any]:
    return {"address": address, "vendor_id": "10de", "product_id": product_id,
            "numa_node": numa_node, "tags": {"e.group": "gpu"}}


A100 = "20b5"
T4 = "1eb8"


def test_flavors_count_matching_pools_and_only_up_hosts_have_free_devices(api: Api) -> None:
    api.ok("PUT", "/v2/agent/hosts/gpu-1/inventory", json={"pool_attrs": GPU_ATTRS, "devices": [
        gpu("0000:17:00.0", A100, 0), gpu("0000:31:00.0", A100, 0), gpu("0000:4b:00.0", T4, 1)]})
    api.ok("PUT", "/v2/agent/hosts/gpu-2/inventory", json={"pool_attrs": GPU_ATTRS, "devices": [
        gpu("0000:17:00.0", A100, 0)]})
    for name, spec in (("bigGPU", {"vendor_id": "10de", "product_id": A100}),
                       ("anyGPU", {"e.group": "gpu"}), ("T4", {"product_id": T4}),
                       ("NoSuchCard", {"vendor_id": "ffff"})):
        api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {"name": name, **spec}})
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.gpu"}})
    api.ok("POST", f"{V2}/flavors/m1.gpu/os-extra_specs",
           json={"extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU"}})
    store = api.client.app.state.store  # type: ignore[attr-defined]
    silence(store, "gpu-2")
    server = api.ok("POST", f"{V2}/servers",
                    json={"server": {"name": "vm", "flavorRef": "m1.gpu"}})["server"]
    assert place(store, server["id"]) == "gpu-1"

    stats = {s["name"]: s for s in api.ok("GET", f"{V2}/os-pci-flavor-stats")["pci_flavor_stats"]}
    assert list(stats) == ["anyGPU", "bigGPU", "NoSuchCard", "T4"]
    totals = {name: (s["count"], s["used"], s["free"]) for name, s in stats.items()}
    assert totals == {"anyGPU": (4, 1, 2), "bigGPU": (3, 1, 1), "NoSuchCard": (0, 0, 0),
                      "T4": (1, 0, 1)}
    assert stats["bigGPU"]["hosts"] == [
        {"host": "gpu-1", "count": 2, "used": 1, "free": 1},
        {"host": "gpu-2", "count": 1, "used": 0, "free": 0}]
    assert stats["bigGPU"]["spec"] == {"vendor_id": "10de", "product_id": A100}
    assert stats["NoSuchCard"]["hosts"] == []


def test_flavor_stats_are_for_admins(api: Api) -> None:
    member = api.member("demo")
    refused = api.call("GET", "/v2/demo/os-pci-flavor-stats", member, expect=403)
    assert refused.json()["error"]["message"].startswith(
        "reading PCI flavor stats needs an admin token")
