"""Fixtures shared across the test suite. Keep this file small."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.sim import PROFILES, HostProfile, build_sysfs

# Rich fixes a console's width from COLUMNS when the console is made, at the CLI's import,
# and pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment (as
# does a shell that exports them). Without them the width follows what a test sets, and a
# test's output is the same however the suite was started.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture
def sim_sysfs(tmp_path: Path) -> Callable[[str | HostProfile], Path]:
    """Build a simulated host (a profile or its name in PROFILES) as a sysfs tree; returns
    the tree's root, to use as `sysfs_root`."""

    def build(profile: str | HostProfile) -> Path:
        chosen = PROFILES[profile] if isinstance(profile, str) else profile
        return build_sysfs(chosen, tmp_path / f"sys-{chosen.name}")

    return build


# The private libvirtd (`real_libvirtd`), PostgreSQL (`postgres`) and network namespace
# (`namespace`, `pf_namespace`) fixtures, for any test directory.
pytest_plugins = ["tests.support.libvirtd", "tests.support.postgres", "tests.support.netns"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first. On several workers (make test runs four, each handed a test
    or two at a time) they then spread across the workers from the start, rather than one
    of them beginning last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
