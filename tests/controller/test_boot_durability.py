"""A boot's 202 is a promise: SIGKILL `passthru serve` right after it and restart it, and
the server is there, on the host it was placed on, holding the devices the 202 named;
the restarted scheduler knows they are taken."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from passthru.controller.store.db import Store
from tests.controller.test_races import Live, create_catalog, ok, report_host
from tests.support.live import LiveController


def gpus_of(server: dict) -> list[str]:
    return [device["address"] for request in server["pci_requests"]
            for device in request["devices"]]


T = TypeVar("T")


def killed_after(db_url: str, data: Path, boot: Callable[[Live], T]
                 ) -> tuple[LiveController, T]:
    """A controller with the GPU catalog and one host, SIGKILLed right after `boot` (no
    shutdown runs: only commits keep what it answered), and what `boot` returned."""
    controller = LiveController(data, db_url, ("--rate-limit", "0"))
    controller.start()
    live = Live(controller)
    try:
        create_catalog(live.admin)
        report_host(live.admin, controller.url)
        answers = boot(live)
        controller.kill()
    finally:
        live.close()
    return controller, answers


@pytest.mark.slow
def test_a_sigkill_after_the_202_keeps_the_server_and_its_claimed_devices(
        db_url: str, tmp_path: Path) -> None:
    controller, answers = killed_after(db_url, tmp_path / "data", lambda live: [
        ok(live.member.post("/servers", json={"server": {
            "name": f"vm{n}", "flavorRef": "m1.gpu"}}))["server"] for n in range(4)])
    assert {a["status"] for a in answers} == {"BUILD"}
    assert {a["host"] for a in answers} == {"compute-0"}
    claimed = {a["id"]: gpus_of(a) for a in answers}
    every = [address for devices in claimed.values() for address in devices]
    assert len(every) == 4 and len(set(every)) == 4  # one GPU each, none twice

    controller.start()
    live = Live(controller)
    try:
        for server_id, devices in claimed.items():
            shown = ok(live.member.get(f"/servers/{server_id}"))["server"]
            assert (shown["status"], shown["host"]) == ("BUILD", "compute-0")
            assert gpus_of(shown) == devices
            assert {d["status"] for r in shown["pci_requests"] for d in r["devices"]} == {
                "claimed"}
        # The host's four GPUs are all taken, as the restarted scheduler knows.
        refused = ok(live.member.post("/servers", json={"server": {
            "name": "one-too-many", "flavorRef": "m1.gpu"}}))["server"]
        assert refused["status"] == "ERROR"
    finally:
        live.close()
        controller.stop()


def test_the_sqlite_store_fsyncs_every_commit(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    try:
        with store.engine.connect() as connection:
            # 2 is FULL: the write-ahead log is fsynced at every commit.
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    finally:
        store.close()
