"""Throwaway network namespaces: `namespace`, an empty one, and `pf_namespace`, one holding
a veth named like the simulated E810's first PF — a real netdev whose kernel driver has no
SR-IOV, so the kernel refuses every VF setting made through it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute, netns

from tests.host.simhost import PF1_NETDEV

__all__ = ["namespace", "pf_namespace"]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"passthru-ns-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


@pytest.fixture
def pf_namespace(namespace: str) -> str:
    with IPRoute(netns=namespace, flags=0) as ipr:
        ipr.link("add", ifname=PF1_NETDEV, kind="veth", peer="peer0")
    return namespace
