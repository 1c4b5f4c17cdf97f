"""Fixtures shared across the test suite. Keep this file small."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.sim import PROFILES, HostProfile, build_sysfs


@pytest.fixture
def sim_sysfs(tmp_path: Path) -> Callable[[str | HostProfile], Path]:
    """Build a simulated host (a profile or its name in PROFILES) as a sysfs tree; returns
    the tree's root, to use as `sysfs_root`."""

    def build(profile: str | HostProfile) -> Path:
        chosen = PROFILES[profile] if isinstance(profile, str) else profile
        return build_sysfs(chosen, tmp_path / f"sys-{chosen.name}")

    return build


# The private libvirtd (`real_libvirtd`), PostgreSQL (`postgres`) and PF network namespace
# (`pf_namespace`) fixtures, for any test directory.
pytest_plugins = ["tests.support.libvirtd", "tests.support.postgres", "tests.support.netns"]
