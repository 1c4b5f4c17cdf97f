"""Two `passthru serve` replicas on one store (a SQLite file, or PostgreSQL): what one
changes, the other's next placement honours, and a claim race lost to the other replica
never turns into a refusal while the host still has free devices."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.controller.replica_churn import Cluster, ok
from tests.controller.test_races import at_once, create_catalog, devices_held, report_host

PROJECT = "demo"


@pytest.fixture
def cluster(db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    replicas = Cluster(tmp_path, db_url, 2)
    replicas.start()
    try:
        with replicas.admin(0) as admin:
            create_catalog(admin)
            report_host(admin, replicas.controllers[0].url)
        yield replicas
    finally:
        replicas.stop()


def member_token(cluster: Cluster) -> str:
    with cluster.admin(0) as admin:
        return str(ok(admin.post("/tokens", json={"token": {"project": PROJECT}}))["token"])


@pytest.mark.slow
def test_a_pci_flavor_made_or_changed_on_one_replica_is_used_by_the_next_boot_on_the_other(
        cluster: Cluster) -> None:
    token = member_token(cluster)
    with cluster.admin(0) as a, cluster.client(1, token, PROJECT) as b:
        # Both replicas place a boot first, so that each has its flavors loaded.
        for replica in (0, 1):
            with cluster.client(replica, token, PROJECT) as api:
                first = ok(api.post("/servers", json={"server": {
                    "name": f"warm-{replica}", "flavorRef": "m1.gpu"}}))["server"]
                assert first["status"] == "BUILD", first
                ok(api.delete(f"/servers/{first['id']}"))

        ok(a.post("/os-pci-flavors", json={"pci-flavor": {"name": "fast", "vendor_id": "8086",
                                                          "product_id": "154c"}}))
        ok(a.post("/flavors", json={"flavor": {"name": "m1.fast"}}))
        ok(a.post("/flavors/m1.fast/os-extra_specs",
                  json={"extra_specs": {"pci_passthrough:pci_flavor": "1:fast"}}))
        made = ok(b.post("/servers", json={"server": {"name": "new", "flavorRef": "m1.fast"}}))
        server = made["server"]
        assert server["status"] == "BUILD", server
        (request,) = server["pci_requests"]
        assert [d["vendor_id"] for d in request["devices"]] == ["8086"]

        ok(a.put("/os-pci-flavors/fast", json={"action": "update", "pci-flavor": {
            "vendor_id": "10de"}}))
        changed = ok(b.post("/servers", json={"server": {
            "name": "changed", "flavorRef": "m1.fast"}}))["server"]
        assert changed["status"] == "BUILD", changed
        (request,) = changed["pci_requests"]
        assert [d["vendor_id"] for d in request["devices"]] == ["10de"]


@pytest.mark.slow
def test_a_flavor_changed_on_one_replica_is_booted_as_changed_on_the_other(
        cluster: Cluster) -> None:
    """Each replica keeps the flavors in memory; an edit through the other is seen."""
    token = member_token(cluster)
    with cluster.admin(0) as a, cluster.client(1, token, PROJECT) as b:
        before = ok(b.post("/servers", json={"server": {"name": "one",
                                                        "flavorRef": "m1.gpu"}}))["server"]
        assert [len(r["devices"]) for r in before["pci_requests"]] == [1]
        ok(a.post("/flavors/m1.gpu/os-extra_specs",
                  json={"extra_specs": {"pci_passthrough:pci_flavor": "2:gpu"}}))
        after = ok(b.post("/servers", json={"server": {"name": "two",
                                                       "flavorRef": "m1.gpu"}}))["server"]
        assert [len(r["devices"]) for r in after["pci_requests"]] == [2], after
        ok(a.delete(f"/servers/{before['id']}"))
        ok(a.delete(f"/servers/{after['id']}"))
        ok(a.delete("/flavors/m1.gpu"))
        gone = b.post("/servers", json={"server": {"name": "three", "flavorRef": "m1.gpu"}})
        assert gone.status_code == 404, gone.text


@pytest.mark.slow
def test_boots_through_two_replicas_for_every_free_device_all_get_one(
        cluster: Cluster) -> None:
    """8 VFs on the host, 8 boots at once, 4 through each replica: each replica's index
    picks the same VFs, so half the claims lose their first race; every boot still gets
    a VF, and the next one is refused only then."""
    token = member_token(cluster)
    clients = [cluster.client(n % 2, token, PROJECT) for n in range(8)]
    try:
        answers = at_once([
            partial(api.post, "/servers", json={"server": {
                "name": f"vm-{n}", "flavorRef": "m1",
                "networks": [{"uuid": "net1", "vnic_type": "direct"}]}})
            for n, api in enumerate(clients)])
    finally:
        for api in clients:
            api.close()
    servers = [ok(answer)["server"] for answer in answers]
    assert Counter(s["status"] for s in servers) == {"BUILD": 8}, [
        (s["name"], s["fault"]) for s in servers if s["status"] != "BUILD"]
    with cluster.admin(1) as admin:
        held = devices_held(admin)
        assert sorted(held.values()) == sorted(s["id"] for s in servers)
    with cluster.client(1, token, PROJECT) as api:
        refused = ok(api.post("/servers", json={"server": {
            "name": "one-more", "flavorRef": "m1",
            "networks": [{"uuid": "net1", "vnic_type": "direct"}]}}))["server"]
    assert refused["status"] == "ERROR"
