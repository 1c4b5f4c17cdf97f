"""An operator's and a tenant's session through the CLI against a live controller."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from passthru.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NoCapacityError,
    UnavailableError,
)
from tests.cli.runner import as_json, ok, run
from tests.support.live import ServedApp

NOVA_CONF = """[pci]
alias = {"name": "QuickAssist", "product_id": "0443", "vendor_id": "8086", "numa_policy": "required"}
alias = {"name": "GPU", "vendor_id": "10de", "device_type": "type-PCI"}
"""

DEVICES = [
    {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "1572", "dev_type": "type-PF",
     "tags": {"e.physical_network": "physnet1"}},
    *({"address": f"0000:0a:02.{i}", "vendor_id": "8086", "product_id": "154c",
       "dev_type": "type-VF", "parent_addr": "0000:0a:00.0",
       "tags": {"e.physical_network": "physnet1"}} for i in range(2)),
]


def test_import_boot_list_show_delete(cli_env: ServedApp, tmp_path: Path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text(NOVA_CONF)
    imported = as_json(f"passthru pci-flavor-import {conf}")
    assert [(i["name"], i["spec"], i["result"]) for i in imported] == [
        ("QuickAssist", {"vendor_id": "8086", "product_id": "0443"},
         "created"),
        ("GPU", {"vendor_id": "10de", "dev_type": "type-PCI"}, "created"),
    ]
    assert "hw:pci_numa_affinity_policy=required" in imported[0]["notes"][0]
    again = ok(f"passthru pci-flavor-import {conf}").output
    assert "exists, left alone" in again

    ok("passthru flavor-create m1.qa --vcpus 2 --ram 2048")
    ok("passthru flavor-key m1.qa set pci_passthrough:pci_flavor=1:QuickAssist")
    ok("passthru image-create qa-image --property pci_passthrough:supported=QuickAssist")
    net = as_json("passthru net-create prod --physical-network physnet1 --segmentation-id 7")
    assert (net["network_type"], net["segmentation_id"]) == ("vlan", 7)
    port = as_json("passthru port-create prod --vnic-type direct --name mine")
    booted = run("passthru boot vm1 --flavor m1.qa --image qa-image "
                 f"--nic port-id={port['id']} --nic net-id=prod,vnic-type=macvtap --json")
    # No host has reported a QuickAssist card: kept in ERROR with the reason.
    assert booted.exit_code == NoCapacityError.exit_code
    assert "server vm1 could not be placed: no host has 1 free device of pci flavor " \
           "QuickAssist" in booted.stderr
    server = as_json("passthru show vm1")
    assert [r["request"]["alternatives"] for r in server["pci_requests"]] == [
        ["QuickAssist"], [], []]

    listed = ok("passthru list").stdout
    assert "vm1" in listed and "ERROR" in listed
    shown = ok("passthru show vm1").stdout
    assert "PCI requests" in shown and "QuickAssist" in shown and "physnet1" in shown
    refused = run("passthru net-delete prod")
    assert refused.exit_code == ConflictError.exit_code
    assert "network prod still has 2 port(s)" in refused.output
    ok("passthru delete vm1")
    assert as_json("passthru list") == []
    assert [p["name"] for p in as_json("passthru port-list")] == ["mine"]
    ok("passthru port-delete mine")
    ok("passthru net-delete prod")


def test_an_agent_token_reports_and_the_fleet_shows_it(cli_env: ServedApp) -> None:
    token = ok("passthru host-token compute-1").stdout.strip()
    agent = httpx.Client(base_url=f"{cli_env.url}/v2/agent/hosts",
                         headers={"Authorization": f"Bearer {token}"})
    agent.put("/compute-1/inventory", json={"devices": DEVICES}).raise_for_status()
    agent.post("/compute-1/heartbeat").raise_for_status()
    assert agent.put("/compute-2/inventory", json={"devices": []}).status_code == 403

    hosts = as_json("passthru host-list")
    assert [(h["name"], h["status"], h["devices"], h["free"]) for h in hosts] == [
        ("compute-1", "up", 3, 3)]
    devices = as_json("passthru pci-device-list --host compute-1")
    assert [d["device"]["address"] for d in devices] == [d["address"] for d in DEVICES]
    stats = as_json("passthru pci-stats")
    assert sorted((s["dev_type"], s["count"], s["free"]) for s in stats) == [
        ("type-PF", 1, 1), ("type-VF", 2, 2)]
    table = ok("passthru pci-stats").stdout
    assert "physnet1" in table and "type-VF" in table
    attrs = as_json("passthru pci-flavor-show 0")
    assert attrs["e.physical_network"] == "True"

    vf = DEVICES[1]["address"]
    assert ok(f"passthru pci-device-set compute-1 {vf} --taint 'flaky link'").stdout == (
        f"device {vf} of host compute-1: tainted (flaky link)\n")
    assert "flaky link" in ok("passthru pci-device-list --host compute-1").stdout
    assert [h["free"] for h in as_json("passthru host-list")] == [2]
    cleared = as_json(f"passthru pci-device-set compute-1 {vf} --clear --json")
    assert (cleared["host"], cleared["device"]["taint"]) == ("compute-1", None)
    for wrong in ("", " --taint x --clear"):
        refused = run(f"passthru pci-device-set compute-1 {vf}{wrong}")
        assert refused.exit_code == InvalidInputError.exit_code
        assert "give either --taint REASON or --clear" in refused.output


def test_a_member_token_works_in_its_project_only(cli_env: ServedApp,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ok("passthru flavor-create m1.small")
    token = ok("passthru host-token compute-1").stdout.strip()
    httpx.put(f"{cli_env.url}/v2/agent/hosts/compute-1/inventory", json={"devices": []},
              headers={"Authorization": f"Bearer {token}"}).raise_for_status()
    member = ok("passthru token-create --project alpha").stdout.strip()
    monkeypatch.setenv("PASSTHRU_TOKEN", member)
    server = as_json("passthru boot vm --flavor m1.small")
    assert (server["project_id"], server["host"]) == ("alpha", "compute-1")
    refused = run("passthru pci-flavor-create mine")
    assert refused.exit_code == ForbiddenError.exit_code
    assert "creating a PCI flavor needs an admin token; this is a member token of alpha" in (
        refused.output)
    assert run("passthru host-list").exit_code == ForbiddenError.exit_code


def test_serve_explains_a_store_it_cannot_open(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/passthru"
    result = run(f"passthru serve --db {url} --data-dir {tmp_path}")
    assert result.exit_code == UnavailableError.exit_code
    assert "cannot open the store postgresql+psycopg://nobody:***@127.0.0.1:1/passthru" in (
        result.output)
    assert "secret" not in result.output
