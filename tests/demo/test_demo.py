"""`passthru demo` end to end, as a newcomer runs it: every use case met, the fleet page
up until Ctrl-C with --keep, nothing left behind; Ctrl-C at any time cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from passthru.demo.script import use_cases
from passthru.demo.walkthrough import MET, NOT_MET
from passthru.sim.guest import MARKER
from passthru.sim.hypervisor import missing

PASSTHRU = Path(sys.executable).with_name("passthru")
#: The use cases every machine walks; the last-but-one (this machine's own devices) is
#: walked only where the machine has PCI devices to offer.
SEED_CASES = [case.title for case in use_cases([])]
ROW = re.compile(rf"│ (\d+)\s+│ (.+?)\s+│ ({MET}|{NOT_MET})\s+│ (\d+)/(\d+)\s+│")
ROOT = re.compile(r"removing (/\S+?passthru-demo-\w+)\.")


def demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    return subprocess.Popen([str(PASSTHRU), "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**env, "COLUMNS": "200"})


def processes_under(root: str) -> list[str]:
    """Command lines of running processes that name a path under `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
        if root in line:
            found.append(line)
    return found


def summary(output: str) -> dict[str, tuple[str, int, int]]:
    return {title: (result, int(passed), int(total))
            for _, title, result, passed, total in ROW.findall(output)}


def assert_every_use_case_met(output: str) -> None:
    results = summary(output)
    assert set(SEED_CASES) <= set(results), output[-5000:]
    assert {title: result for title, (result, _, _) in results.items()} == dict.fromkeys(
        results, MET), output[-5000:]
    assert all(passed == total > 0 for _, passed, total in results.values())


def assert_cleaned_up(output: str) -> None:
    root = ROOT.search(output)
    assert root is not None, output[-3000:]
    assert not Path(root[1]).exists()
    assert processes_under(root[1]) == []


@pytest.mark.slow
def test_every_use_case_is_met_the_cluster_stays_until_ctrl_c_and_nothing_is_left() -> None:
    # One run covers both ends of the demo: `--keep` walks every use case as the plain run
    # does, then holds the cluster for the fleet page until Ctrl-C, then cleans up.
    run = demo("--keep")
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if line.startswith("The cluster keeps running. Fleet page:"):
            break
    else:
        raise AssertionError("".join(lines)[-5000:])
    page = line.split("Fleet page: ", 1)[1].strip()
    url, token = page.split("/ui#token=")
    assert httpx.get(f"{url}/ui").is_success
    hosts = httpx.get(f"{url}/v2/admin/os-hosts",
                      headers={"Authorization": f"Bearer {token}"}).json()["hosts"]
    assert {"sim-gpu-2numa", "sim-e810", "sim-connectx", "sim-qat"} <= {
        h["name"] for h in hosts if h["status"] == "up"}

    run.send_signal(signal.SIGINT)
    rest, _ = run.communicate(timeout=60)
    output = "".join(lines) + rest

    assert run.returncode == 0, output[-5000:]
    assert_every_use_case_met(output)
    # This machine runs real guests (scripts/setup.sh installs libvirtd and qemu).
    if missing() is None:
        assert summary(output)["A real VM"][0] == MET, output[-5000:]
        assert "$ passthru console-log vm-real --lines 9" in output
        assert f"{MARKER} ready" in output and f"{MARKER} instance-id " in output
    for command in ("$ passthru boot gpu-vm --flavor m1.small",
                    "$ passthru show plan-b-vm --xml",
                    "$ passthru boot plan-a-vm --flavor m1.tiny --nic "
                    "net-id=net1,vnic-type=direct,pci-flavor=phy1_NIC"):
        assert command in output
    assert "no host has 5 free devices of pci flavor bigGPU; closest: sim-gpu-2numa" in output
    assert "Every use case was met" in output
    assert_cleaned_up(output)


def test_ctrl_c_while_hosts_come_up_stops_and_removes_everything() -> None:
    run = demo()
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "passthru agent --config" in line:
            break
    root = re.search(r"(/\S+?passthru-demo-\w+)/", lines[-1])
    assert root is not None

    run.send_signal(signal.SIGINT)
    rest, _ = run.communicate(timeout=60)

    assert run.returncode == 130, "".join(lines) + rest
    assert "interrupted: the demo cluster was stopped and removed" in rest
    assert not Path(root[1]).exists()
    assert processes_under(root[1]) == []
