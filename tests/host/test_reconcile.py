"""Reconciliation after an agent restart: a new Attacher on the same libvirt connection
sets the running domains against the servers the controller still has."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from passthru.host.attach import domain_name
from passthru.host.domain_xml import DomainSpec, build_domain_xml
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.reconcile import owned_domains, reconcile
from passthru.pci.work import KnownServer, OwnedDomain, ReconcileReport, SpawnOrder
from tests.host.simhost import GPUS, PF1_NETDEV, RecordingApplier, SimHost, make_host
from tests.host.test_attach import every_shape, flavor, nic, spawn_order


@pytest.fixture
def host(tmp_path: Path) -> SimHost:
    return make_host(tmp_path)


@pytest.fixture
def driver(host: SimHost) -> Iterator[LibvirtDriver]:
    with LibvirtDriver(host.uri) as connection:
        yield connection


def running(host: SimHost, driver: LibvirtDriver, *orders: SpawnOrder) -> None:
    """Spawn `orders` with the agent process that is about to "die"."""
    attacher = host.attacher(driver, RecordingApplier())
    for order in orders:
        assert attacher.spawn(order).ok


def test_restarted_agent_keeps_known_destroys_orphans_and_reports_missing(
        host: SimHost, driver: LibvirtDriver) -> None:
    active = every_shape(host)
    building = spawn_order(flavor(host, GPUS[1]), name="vm-building")
    deleted = spawn_order(nic(host, "direct", "0000:5e:01.5"), nic(host, "macvtap", "0000:5e:01.6"),
                          name="vm-deleted")
    running(host, driver, active, building, deleted)
    # Domains passthru did not make: another tool's, and one that only looks like ours.
    foreign = ["web", f"passthru-{str(uuid.uuid4()).upper()}"]
    for name in foreign:
        driver.define(build_domain_xml(DomainSpec(name, str(uuid.uuid4()), 256, 1)))
    vanished, errored = str(uuid.uuid4()), str(uuid.uuid4())

    applier = RecordingApplier()
    report = reconcile(host.attacher(driver, applier), [
        KnownServer(active.server_uuid, active=True),
        KnownServer(building.server_uuid, active=False),
        KnownServer(vanished, active=True),
        KnownServer(errored, active=False),
    ])

    kept = [OwnedDomain(active.server_uuid, domain_name(active.server_uuid), True,
                        ["0000:17:00.0", "0000:3d:01.0", "0000:5e:01.1", "0000:af:00.0",
                         "0000:b1:00.0"], ["enp94s0f0v2"]),
            OwnedDomain(building.server_uuid, domain_name(building.server_uuid), True,
                        [GPUS[1]], [])]
    assert report == ReconcileReport(
        kept=sorted(kept, key=lambda domain: domain.domain),
        orphans=[OwnedDomain(deleted.server_uuid, domain_name(deleted.server_uuid), True,
                             ["0000:5e:01.5"], ["enp94s0f0v6"])],
        missing=[vanished])
    assert {state.name for state in driver.domains()} == {
        *foreign, domain_name(active.server_uuid), domain_name(building.server_uuid)}
    # Only the orphan's VFs were reset: by address, and the macvtap's by its netdev.
    assert sorted((slot.pf_netdev, slot.index) for slot in applier.resets) == [
        (PF1_NETDEV, 5), (PF1_NETDEV, 6)]


def test_a_stopped_domain_of_a_known_server_is_kept_and_shown_stopped(
        host: SimHost, driver: LibvirtDriver) -> None:
    order = spawn_order(flavor(host, GPUS[0]))
    running(host, driver, order)
    driver.stop(domain_name(order.server_uuid))

    report = reconcile(host.attacher(driver, RecordingApplier()),
                       [KnownServer(order.server_uuid, active=True)])

    assert [(domain.server_uuid, domain.active) for domain in report.kept] == [
        (order.server_uuid, False)]
    assert report.missing == []


def test_an_orphan_whose_vf_cannot_be_reset_is_named(host: SimHost,
                                                     driver: LibvirtDriver) -> None:
    order = spawn_order(nic(host, "direct", "0000:5e:01.1"))
    running(host, driver, order)

    applier = RecordingApplier(refuse_reset=frozenset({"0000:5e:01.1"}))
    report = reconcile(host.attacher(driver, applier), [])

    assert [domain.server_uuid for domain in report.orphans] == [order.server_uuid]
    assert report.orphan_faults == {order.server_uuid: (
        f"domain {domain_name(order.server_uuid)} is gone, but reset VF 0000:5e:01.1 "
        f"failed: PF netdev 'enp94s0f0' not found")}
    assert owned_domains(driver) == []


def test_nothing_running_and_nothing_known_is_a_quiet_host(host: SimHost,
                                                           driver: LibvirtDriver) -> None:
    assert reconcile(host.attacher(driver, RecordingApplier()), []) == ReconcileReport()
