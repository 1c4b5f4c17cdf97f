"""`real_libvirtd`: a private libvirtd with the qemu driver for the test session
(`passthru.sim.hypervisor`), skipped only where it cannot run (not root, or no qemu)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from passthru.sim.hypervisor import Libvirtd, missing, running_libvirtd
from tests.support.machine import cannot_run

__all__ = ["Libvirtd", "real_libvirtd"]


@pytest.fixture(scope="session")
def real_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A libvirtd with the qemu driver, private to this test session."""
    if (reason := missing()) is not None:
        cannot_run(reason)
    root = tmp_path_factory.mktemp("libvirtd")
    with running_libvirtd(root, f"pt-{os.getpid()}") as daemon:
        yield daemon
