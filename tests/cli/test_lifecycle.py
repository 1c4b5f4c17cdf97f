"""`passthru stop`, `start`, `reboot [--hard]` and `console-log` against a live controller,
with a host agent's order worker on a libvirt test:/// connection over a simulated host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from passthru.errors import ConflictError
from passthru.host.agent import Agent
from passthru.host.attach import domain_name
from passthru.host.config import offered
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.link import HttpLink, connect
from passthru.host.worker import OrderWorker
from passthru.pci.work import PowerState
from tests.cli.runner import as_json, ok, run
from tests.host.simhost import RecordingApplier, make_host
from tests.support.live import ServedApp


@pytest.fixture
def worker(cli_env: ServedApp, tmp_path: Path) -> Iterator[tuple[OrderWorker, Path]]:
    sim = make_host(tmp_path / "compute-1")
    token = ok("passthru host-token compute-1").stdout.strip()
    link: HttpLink = connect(cli_env.url, "compute-1", token)
    config = sim.config()
    Agent(scan=lambda: offered(config), link=link, pool_attrs=config.pool_attrs).report_once()
    instances = tmp_path / "instances"
    with LibvirtDriver(sim.uri) as driver:
        made = OrderWorker(link, sim.attacher(driver, RecordingApplier()), instances)
        made.start()
        yield made, instances
    link.close()


def test_stop_start_reboot_and_the_console_log(worker: tuple[OrderWorker, Path]) -> None:
    orders, instances = worker
    ok("passthru flavor-create m1.small")
    vm = as_json("passthru boot vm --flavor m1.small")
    orders.run_orders()
    assert "server vm: ACTIVE (powering-off)" in ok("passthru stop vm").stdout
    orders.run_orders()
    assert as_json("passthru show vm")["status"] == "SHUTOFF"
    driver = orders.attacher.driver
    assert driver.state(domain_name(vm["id"])) is PowerState.SHUTOFF
    refused = run("passthru reboot vm")
    assert refused.exit_code == ConflictError.exit_code
    assert "is SHUTOFF" in refused.output and "allowed now: start, hard-reboot" in refused.output
    assert "server vm: SHUTOFF (powering-on)" in ok("passthru start vm").stdout
    orders.run_orders()
    assert driver.state(domain_name(vm["id"])) is PowerState.RUNNING
    assert "server vm: REBOOT (rebooting)" in ok("passthru reboot vm").stdout
    orders.run_orders()
    assert "server vm: HARD_REBOOT (rebooting_hard)" in ok("passthru reboot --hard vm").stdout
    orders.run_orders()
    assert as_json("passthru show vm")["status"] == "ACTIVE"

    log = instances / vm["id"] / "console.log"
    log.parent.mkdir(parents=True)
    log.write_text("SeaBIOS (version 1.16)\nBooting from Hard Disk...\nvm login: \n")
    orders.run_orders()
    assert ok("passthru console-log vm").stdout == log.read_text()
    assert ok("passthru console-log vm --lines 1").stdout == "vm login: \n"
