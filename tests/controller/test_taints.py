"""Device taints through the API (DRA's NoSchedule): a tainted device is given to no new
VM, a VM that holds one keeps it and frees it as ever, and the device waits for an operator
to clear it. Taints come from an operator, from another card reported at the address of a
device in use, and from a one-time-use device's first use."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from tests.controller.conftest import ON_BOTH, Api

V2 = "/v2/admin"
A, B = "0000:81:00.0", "0000:82:00.0"
RESOURCES = {"cpus": [{"id": n, "node": 0, "socket": 0} for n in range(4)],
             "numa": [{"id": 0, "memory_mb": 16384}], "disk_gb": 100}


def gpu(address: str, **fields: Any) -> dict[str, Any]:
    return {"address": address, "vendor_id": "10de", "product_id": "20b5",
            "dev_class": "030200", "iommu_group": int(address[5:7], 16), **fields}


def report(api: Api, *devices: dict[str, Any]) -> None:
    token = api.agent("c1")
    api.ok("PUT", "/v2/agent/hosts/c1/inventory", token,
           json={"devices": list(devices), "resources": RESOURCES})
    api.ok("POST", "/v2/agent/hosts/c1/heartbeat", token)


def catalog(api: Api) -> None:
    api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {"name": "gpu",
                                                               "vendor_id": "10de"}})
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.gpu"}})
    api.ok("POST", f"{V2}/flavors/m1.gpu/os-extra_specs",
           json={"extra_specs": {"pci_passthrough:pci_flavor": "1:gpu"}})


def boot(api: Api, name: str) -> dict[str, Any]:
    api.ok("POST", f"{V2}/servers", json={"server": {"name": name, "flavorRef": "m1.gpu"}})
    server: dict[str, Any] = api.ok("GET", f"{V2}/servers/{name}")["server"]
    return server


def held(server: dict[str, Any]) -> list[str]:
    return [d["address"] for r in server["pci_requests"] for d in r["devices"]]


def device(api: Api, address: str) -> dict[str, Any]:
    entries = api.ok("GET", f"{V2}/os-pci-devices", params={"host": "c1"})["pci_devices"]
    found: dict[str, Any] = next(e["device"] for e in entries
                                 if e["device"]["address"] == address)
    return found


def free_gpus(api: Api) -> int:
    return sum(p["free"] for p in api.ok("GET", f"{V2}/os-pci-stats")["pci_stats"])


def events(api: Api, kind: str) -> list[tuple[str, str]]:
    return [(e["device"], e["message"])
            for e in api.ok("GET", f"{V2}/os-events", params={"kind": kind})["events"]]


def taint(api: Api, address: str, reason: str) -> dict[str, Any]:
    body: dict[str, Any] = api.ok("PUT", f"{V2}/os-pci-devices/c1/{address}/taint",
                                  json={"taint": {"reason": reason}})
    return body


@ON_BOTH
def test_a_tainted_device_is_given_to_no_new_vm_until_cleared(api: Api, settings: Settings
                                                               ) -> None:
    report(api, gpu(A), gpu(B))
    catalog(api)
    tainted = taint(api, A, "fan failing")["pci_device"]
    assert (tainted["host"], tainted["device"]["taint"]) == ("c1", "fan failing")
    assert free_gpus(api) == 1
    # Counted by the store, as a replica starting up counts it: the same.
    with TestClient(create_app(settings)) as client:
        assert free_gpus(Api(client, api.admin)) == 1

    assert held(boot(api, "vm1")) == [B]
    refused = boot(api, "vm2")
    assert refused["status"] == "ERROR"
    assert refused["fault"].startswith("no host has 1 free device of pci flavor gpu")

    cleared = api.ok("DELETE", f"{V2}/os-pci-devices/c1/{A}/taint")["pci_device"]
    assert cleared["device"]["taint"] is None
    assert held(boot(api, "vm3")) == [A]
    assert events(api, "device-tainted") == [(A, "fan failing")]
    assert events(api, "device-cleared") == [(A, "taint cleared (it was: fan failing)")]


def test_a_vm_keeps_a_device_tainted_under_it_and_frees_it_as_ever(api: Api) -> None:
    report(api, gpu(A))
    catalog(api)
    vm1 = boot(api, "vm1")
    assert held(vm1) == [A]
    taint(api, A, "move it off")
    assert held(api.ok("GET", f"{V2}/servers/vm1")["server"]) == [A]

    api.call("DELETE", f"{V2}/servers/vm1", expect=204)
    assert (device(api, A)["status"], device(api, A)["taint"]) == ("available", "move it off")
    assert boot(api, "vm2")["status"] == "ERROR"


@ON_BOTH
def test_a_one_time_use_device_waits_for_an_operator_after_its_first_vm(api: Api) -> None:
    report(api, gpu(A, tags={"e.one_time_use": "true"}))
    catalog(api)
    assert held(boot(api, "vm1")) == [A]
    api.call("DELETE", f"{V2}/servers/vm1", expect=204)

    used = ("used once (one_time_use): an operator clears it once it is fit for another VM")
    assert device(api, A)["taint"] == used
    assert events(api, "device-tainted") == [(A, used)]
    assert boot(api, "vm2")["status"] == "ERROR"
    api.ok("DELETE", f"{V2}/os-pci-devices/c1/{A}/taint")
    assert held(boot(api, "vm3")) == [A]


def test_another_card_under_a_vm_taints_its_device_for_the_next_one(api: Api) -> None:
    report(api, gpu(A))
    catalog(api)
    vm1 = boot(api, "vm1")
    report(api, gpu(A, product_id="2236"))

    assert device(api, A)["taint"] == (
        f"identity changed while server {vm1['id']} held it: product_id 20b5 → 2236")
    [(address, message)] = events(api, "device-identity-changed")
    assert address == A and message.endswith("the device is tainted until cleared")
    api.call("DELETE", f"{V2}/servers/vm1", expect=204)
    assert boot(api, "vm2")["status"] == "ERROR"


def test_taints_are_refused_with_what_was_wrong(api: Api) -> None:
    report(api, gpu(A))
    path = f"{V2}/os-pci-devices/c1/{A}/taint"
    body = {"taint": {"reason": "x"}}
    assert "no host 'c9'" in api.call(
        "PUT", f"{V2}/os-pci-devices/c9/{A}/taint", json=body, expect=404).text
    assert "host c1 has no device 0000:81:00.1" in api.call(
        "PUT", f"{V2}/os-pci-devices/c1/0000:81:00.1/taint", json=body, expect=404).text
    assert "is malformed" in api.call(
        "PUT", f"{V2}/os-pci-devices/c1/81-00/taint", json=body, expect=400).text
    api.call("PUT", path, json={"taint": {"reason": ""}}, expect=422)
    member = api.member("demo")
    api.call("PUT", f"/v2/demo/os-pci-devices/c1/{A}/taint", member, json=body, expect=403)
    assert device(api, A)["taint"] is None
