"""Host, PCI and PCI flavor stats and the fleet summary, answered from the scheduler's
index, give the numbers the store gives (`controller.hosts.usage`, counted by the database) on a
fleet with claimed GPUs, claimed VFs that block their PF, a host that went down and one
whose devices went away."""

from __future__ import annotations

from collections import Counter
from typing import Any

from passthru.controller.hosts.reports import mark_silent_hosts_down
from passthru.controller.hosts.usage import pool_usages
from passthru.controller.scheduler.snapshot import load_flavors
from passthru.controller.store.models import ServerRow, ServerStatus
from tests.controller.conftest import ON_BOTH, Api
from tests.controller.test_paging import walk
from tests.web.fleet import silence

V2 = "/v2/admin"
ATTRS = ["vendor_id", "product_id", "e.group", "e.physical_network"]


def _gpu(address: str, product: str, numa_node: int) -> dict[str, Any]:
    return {"address": address, "vendor_id": "10de", "product_id": product,
            "numa_node": numa_node, "tags": {"e.group": "gpu"}}


def _pf_and_vfs(bus: int, vfs: int) -> list[dict[str, Any]]:
    pf = f"0000:{bus:02x}:00.0"
    net = {"e.physical_network": "physnet1"}
    return [{"address": pf, "vendor_id": "8086", "product_id": "1572", "dev_type": "type-PF",
             "tags": net},
            *({"address": f"0000:{bus:02x}:02.{i}", "vendor_id": "8086", "product_id": "154c",
               "dev_type": "type-VF", "parent_addr": pf, "tags": net} for i in range(vfs))]


def _populate(api: Api) -> None:
    for n in range(6):
        devices = [_gpu(f"0000:{0x17 + n:02x}:00.0", "20b5", 0),
                   _gpu(f"0000:{0x31 + n:02x}:00.0", "20b5", 0),
                   _gpu("0000:4b:00.0", "1eb8", 1), *_pf_and_vfs(0x0a, 3 + n % 2)]
        api.ok("PUT", f"/v2/agent/hosts/host-{n}/inventory",
               json={"pool_attrs": ATTRS, "devices": devices})
    # host-5 loses its T4.
    api.ok("PUT", "/v2/agent/hosts/host-5/inventory",
           json={"pool_attrs": ATTRS, "devices": [_gpu("0000:1c:00.0", "20b5", 0),
                                                   *_pf_and_vfs(0x0a, 4)]})
    for name, spec in (("bigGPU", {"product_id": "20b5"}), ("anyGPU", {"e.group": "gpu"}),
                       ("VF", {"product_id": "154c"}), ("PF", {"dev_type": "type-PF"}),
                       ("none", {"vendor_id": "ffff"})):
        api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {"name": name, **spec}})
    for flavor, request in (("m1.gpu", "1:bigGPU"), ("m1.vf", "1:VF")):
        api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": flavor}})
        api.ok("POST", f"{V2}/flavors/{flavor}/os-extra_specs",
               json={"extra_specs": {"pci_passthrough:pci_flavor": request}})
    # Tainted: counted in no pool's free devices, but in its devices, and kept by its VM.
    api.ok("PUT", f"{V2}/os-pci-devices/host-3/0000:4b:00.0/taint",
           json={"taint": {"reason": "fan"}})
    for n in range(5):
        api.ok("POST", f"{V2}/servers", json={"server": {"name": f"g{n}", "flavorRef": "m1.gpu"}})
        api.ok("POST", f"{V2}/servers", json={"server": {"name": f"v{n}", "flavorRef": "m1.vf"}})
    api.ok("PUT", f"{V2}/os-pci-devices/host-0/0000:0a:02.0/taint",
           json={"taint": {"reason": "flaky"}})
    store = api.client.app.state.store  # type: ignore[attr-defined]
    silence(store, "host-2")
    # The controller's sweep tells its scheduler what went down; so does this.
    api.client.app.state.scheduler.refresh(["host-2"])  # type: ignore[attr-defined]
    with store.write() as session:
        assert mark_silent_hosts_down(session, 180.0) == []


def _from_store(api: Api) -> dict[str, Any]:
    """What the store says, counted by the database."""
    with api.client.app.state.store.read() as session:  # type: ignore[attr-defined]
        usages = pool_usages(session)
        flavors = load_flavors(session)
        servers = Counter(row.status for row in session.query(ServerRow)
                          if row.status is not ServerStatus.DELETED)
    hosts: dict[str, Counter[str]] = {}
    per_flavor: dict[str, dict[str, Counter[str]]] = {name: {} for name in flavors}
    for u in usages:
        hosts.setdefault(u.host, Counter()).update(devices=u.count, free=u.free, used=u.used)
        for name, flavor in flavors.items():
            if flavor.matches_pool(u.pool):
                per_flavor[name].setdefault(u.host, Counter()).update(
                    count=u.count, free=u.free, used=u.used)
    return {
        "pools": sorted((u.host, u.pool_id, u.count, u.free, u.used) for u in usages),
        "hosts": {name: dict(tally) for name, tally in hosts.items()},
        "flavors": {name: {host: dict(tally) for host, tally in shares.items()}
                    for name, shares in per_flavor.items()},
        "servers": {str(status): number for status, number in servers.items()},
    }


@ON_BOTH
def test_stats_from_the_index_are_the_stores(api: Api) -> None:
    _populate(api)
    expected = _from_store(api)
    assert any(used for *_, used in expected["pools"])
    assert any(free == 0 and count for _, _, count, free, _ in expected["pools"])

    pools = walk(api, "/os-pci-stats", "pci_stats", limit=7)
    assert sorted((p["host"], p["pool_id"], p["count"], p["free"], p["used"])
                  for p in pools) == expected["pools"]

    hosts = walk(api, "/os-hosts", "hosts", limit=4)
    assert {h["name"]: {"devices": h["devices"], "free": h["free"], "used": h["used"]}
            for h in hosts} == expected["hosts"]
    assert api.ok("GET", f"{V2}/os-hosts/host-2")["host"]["free"] == 0

    # Pages of hosts, each with every flavor: its fleet totals, and its share of them.
    pages = walk(api, "/os-pci-flavor-stats", "pci_flavor_stats", limit=2)
    assert len(pages) == 5 * 3
    stats = pages[:5]
    assert [s["name"] for s in stats] == ["anyGPU", "bigGPU", "none", "PF", "VF"]
    for later in range(5, len(pages), 5):
        for flavor, again in zip(stats, pages[later:later + 5], strict=True):
            assert {k: again[k] for k in ("name", "count", "free", "used")} == {
                k: flavor[k] for k in ("name", "count", "free", "used")}
            flavor["hosts"] = flavor["hosts"] + again["hosts"]
    assert {s["name"]: {h["host"]: {k: h[k] for k in ("count", "free", "used")}
                        for h in s["hosts"]} for s in stats} == expected["flavors"]
    for s in stats:
        assert (s["count"], s["free"], s["used"]) == tuple(
            sum(h[k] for h in s["hosts"]) for k in ("count", "free", "used"))
    (vf,) = api.ok("GET", f"{V2}/os-pci-flavor-stats", params={"name": "VF"}
                   )["pci_flavor_stats"]
    assert vf == next(s for s in stats if s["name"] == "VF")

    summary = api.ok("GET", f"{V2}/os-fleet-summary")["summary"]
    assert summary["hosts"] == {"up": 5, "down": 1}
    totals = Counter[str]()
    for tally in expected["hosts"].values():
        totals.update(tally)
    assert summary["devices"] == {"count": totals["devices"], "free": totals["free"],
                                  "used": totals["used"]}
    assert [(f["name"], f["count"], f["free"], f["used"]) for f in summary["pci_flavors"]] == [
        (s["name"], s["count"], s["free"], s["used"]) for s in stats]
    assert summary["servers"] == expected["servers"]
    newest = api.ok("GET", f"{V2}/os-events", params={"limit": 1})["events"][0]["id"]
    assert summary["last_event"] == newest
    assert api.ok("GET", f"{V2}/os-events", params={"after": newest})["events"] == []


def _summary_from_store(api: Api) -> dict[str, Any]:
    """The summary's device and flavor numbers, counted by the database."""
    expected = _from_store(api)
    devices = Counter[str]()
    for tally in expected["hosts"].values():
        devices.update(tally)
    flavors = {name: Counter[str]() for name in expected["flavors"]}
    for name, shares in expected["flavors"].items():
        for share in shares.values():
            flavors[name].update(share)
    return {"devices": {"count": devices["devices"], "free": devices["free"],
                        "used": devices["used"]},
            "pci_flavors": {name: (c["count"], c["free"], c["used"])
                            for name, c in flavors.items()},
            "servers": expected["servers"]}


def _summary(api: Api) -> dict[str, Any]:
    summary = api.ok("GET", f"{V2}/os-fleet-summary")["summary"]
    return {"devices": summary["devices"],
            "pci_flavors": {f["name"]: (f["count"], f["free"], f["used"])
                            for f in summary["pci_flavors"]},
            "servers": summary["servers"]}


def test_the_summary_follows_every_change_though_it_is_kept_between_polls(api: Api) -> None:
    """What the summary keeps from one poll to the next is counted again after a claim,
    an inventory report, a host going down and a PCI flavor edit."""
    _populate(api)
    before = _summary(api)
    assert before == _summary(api) == _summary_from_store(api)

    api.ok("POST", f"{V2}/servers", json={"server": {"name": "g9", "flavorRef": "m1.gpu"}})
    claimed = _summary(api)
    assert claimed == _summary_from_store(api)
    assert claimed["devices"]["used"] == before["devices"]["used"] + 1

    api.ok("PUT", "/v2/agent/hosts/host-0/inventory", json={"pool_attrs": ATTRS, "devices": [
        _gpu("0000:17:00.0", "20b5", 0), _gpu("0000:31:00.0", "20b5", 0),
        _gpu("0000:4b:00.0", "1eb8", 1), _gpu("0000:65:00.0", "20b5", 1),
        *_pf_and_vfs(0x0a, 3)]})
    reported = _summary(api)
    assert reported == _summary_from_store(api)
    assert reported["pci_flavors"]["bigGPU"][0] == claimed["pci_flavors"]["bigGPU"][0] + 1

    store = api.client.app.state.store  # type: ignore[attr-defined]
    silence(store, "host-3")
    down = _summary(api)
    assert down == _summary_from_store(api)
    assert down["devices"]["free"] < reported["devices"]["free"]

    api.ok("PUT", f"{V2}/os-pci-flavors/none", json={"pci-flavor": {"product_id": "1eb8"}})
    edited = _summary(api)
    assert edited == _summary_from_store(api)
    assert down["pci_flavors"]["none"] == (0, 0, 0)
    # Now every T4: five hosts have one, two of them down.
    assert edited["pci_flavors"]["none"] == (5, 3, 0)


def _get(api: Api, path: str, tag: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {api.admin}"}
    if tag is not None:
        headers["If-None-Match"] = tag
    return api.client.get(f"{V2}{path}", headers=headers)


POLLED = ("/os-fleet-summary", "/os-hosts", "/os-hosts?limit=2", "/os-events?limit=5",
          "/os-pci-stats", "/os-pci-stats?limit=3", "/os-pci-flavor-stats?limit=2")


def test_polls_get_304_while_nothing_changed_and_the_new_answer_once_it_did(api: Api) -> None:
    _populate(api)
    tags = {}
    for path in POLLED:
        first = _get(api, path)
        assert first.status_code == 200, first.text
        tag = tags[path] = first.headers["ETag"]
        assert first.headers["Cache-Control"] == "private, no-cache"
        again = _get(api, path, tag)
        assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", tag)
        assert _get(api, path, f'"other", W/{tag}').status_code == 304
        other = _get(api, path, '"other"')
        assert (other.status_code, other.json()) == (200, first.json())

    # A boot claims a GPU (on a host of the whole lists) and records events.
    api.ok("POST", f"{V2}/servers", json={"server": {"name": "g9", "flavorRef": "m1.gpu"}})
    for path in ("/os-fleet-summary", "/os-hosts", "/os-events?limit=5", "/os-pci-stats",
                 "/os-pci-flavor-stats?limit=2"):
        moved = _get(api, path, tags[path])
        assert moved.status_code == 200, path
        assert moved.headers["ETag"] != tags[path]
        assert _get(api, path, moved.headers["ETag"]).status_code == 304
    summary = _get(api, "/os-fleet-summary", tags["/os-fleet-summary"]).json()["summary"]
    assert summary["servers"] == {"BUILD": 11}
