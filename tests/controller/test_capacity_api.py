"""Host capacity through the API: a boot is counted against its host, a boot that finds no
room ends in ERROR with what was short, a delete gives the room back, and a flavor's
`hw:cpu_policy` must be a known one."""

from __future__ import annotations

from tests.controller.conftest import Api

V2 = "/v2/admin"
RESOURCES = {"cpus": [{"id": n, "node": 0, "socket": 0} for n in range(2)],
             "numa": [{"id": 0, "memory_mb": 4608}], "disk_gb": 100}


def report(api: Api, host: str) -> None:
    token = api.agent(host)
    api.ok("PUT", f"/v2/agent/hosts/{host}/inventory", token,
           json={"devices": [], "resources": RESOURCES})
    api.ok("POST", f"/v2/agent/hosts/{host}/heartbeat", token)


def host_use(api: Api, host: str) -> tuple[int, int, int, int | None]:
    shown = api.ok("GET", f"{V2}/os-hosts/{host}")["host"]
    return (shown["vcpus_used"], shown["ram_mb_used"], shown["disk_gb_used"],
            shown["vcpus_capacity"])


def test_boots_fill_a_host_then_fail_with_what_is_short(api: Api) -> None:
    report(api, "c1")
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.half", "vcpus": 4,
                                                      "ram": 2048, "disk": 40}})
    for name in ("vm1", "vm2"):
        server = api.ok("POST", f"{V2}/servers", json={"server": {
            "name": name, "flavorRef": "m1.half"}})["server"]
        assert (server["status"], server["host"]) == ("BUILD", "c1")
    assert host_use(api, "c1") == (8, 4096, 80, 8)  # 2 CPUs x 4
    api.ok("POST", f"{V2}/servers", json={"server": {"name": "vm3", "flavorRef": "m1.half"}})
    refused = api.ok("GET", f"{V2}/servers/vm3")["server"]
    assert refused["status"] == "ERROR"
    assert refused["fault"] == (
        "no host has room for 4 vCPUs, 2048 MiB memory, 40 GB disk; closest: c1 has 0 of 8 "
        "vCPUs free")
    api.call("DELETE", f"{V2}/servers/vm1", expect=204)
    assert host_use(api, "c1") == (4, 2048, 40, 8)
    api.call("DELETE", f"{V2}/servers/vm3", expect=204)  # held nothing: gives back nothing
    assert host_use(api, "c1") == (4, 2048, 40, 8)
    server = api.ok("POST", f"{V2}/servers", json={"server": {
        "name": "vm4", "flavorRef": "m1.half"}})["server"]
    assert server["host"] == "c1"


def test_an_unknown_cpu_policy_is_refused_at_boot(api: Api) -> None:
    report(api, "c1")
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.odd"}})
    api.ok("POST", f"{V2}/flavors/m1.odd/os-extra_specs",
           json={"extra_specs": {"hw:cpu_policy": "mixed"}})
    answer = api.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1.odd"}}, expect=400)
    assert "hw:cpu_policy='mixed' is not one of: shared, dedicated" in answer.text
    assert host_use(api, "c1") == (0, 0, 0, 8)
