"""`real_libvirtd`: a private libvirtd with the qemu driver for the test session
(`passthru.sim.hypervisor`), skipped only where it cannot run (not root, or no qemu)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from passthru.sim.hypervisor import Libvirtd, missing, running_libvirtd

__all__ = ["Libvirtd", "real_libvirtd"]


@pytest.fixture(scope="session")
def real_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A libvirtd with the qemu driver, private to this test session."""
    if (reason := missing()) is not None:
        # CI installs everything (scripts/setup.sh) and runs as root: a skip there would
        # hide a broken setup, so it fails instead.
        if os.environ.get("CI"):
            pytest.fail(f"a private libvirtd cannot run on this CI machine: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("libvirtd")
    with running_libvirtd(root, f"pt-{os.getpid()}") as daemon:
        yield daemon
