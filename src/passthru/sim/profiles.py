"""Named hosts of real hardware shapes, each with a host config that fits it."""

from __future__ import annotations

from collections.abc import Mapping

from passthru.pci.device import PHYSICAL_NETWORK
from passthru.sim.hardware import (
    A100,
    CONNECTX5,
    CONNECTX6,
    E810,
    HOST_BRIDGE,
    I350,
    NVME_PM1733,
    QAT_4XXX,
    QAT_C62X,
    QAT_DH895XCC,
    T4,
    X710,
)
from passthru.sim.profile import Card, HostProfile, Topology

# Every host has a chipset and an on-board management NIC that it keeps for itself.
_CHIPSET = (Card(HOST_BRIDGE, "0000:00:00.0"), Card(I350, "0000:02:00.0", ports=2))


def _entry(
    match: Mapping[str, str], extra: Mapping[str, str] | None = None, exclude: tuple[str, ...] = ()
) -> Mapping[str, object]:
    entry: dict[str, object] = {"match": dict(match), "extra": dict(extra or {})}
    if exclude:
        entry["exclude"] = list(exclude)
    return entry


def _vfs_on(
    vendor_id: str, product_id: str, pf: str, network: str, exclude: tuple[str, ...] = ()
) -> Mapping[str, object]:
    """The VFs of PF `pf` (the PF's address selects its VFs), on physical network `network`."""
    return _entry(
        {"vendor_id": vendor_id, "product_id": product_id, "address": pf},
        {PHYSICAL_NETWORK: network},
        exclude,
    )


X710_2X = HostProfile(
    name="x710-2x",
    description="NIC host: two dual-port Intel X710 (one per NUMA node), 8 VFs per port; "
    "port 0 on physnet1, port 1 on physnet2; two VFs kept for the host",
    cards=(
        *_CHIPSET,
        Card(X710, "0000:3b:00.0", numa_node=0, ports=2, numvfs=8),
        Card(X710, "0000:86:00.0", numa_node=1, ports=2, numvfs=8),
    ),
    pool_attrs=("vendor_id", "product_id", PHYSICAL_NETWORK),
    pci_information=(
        _vfs_on("8086", "154c", "0000:3b:00.0", "physnet1"),
        _vfs_on("8086", "154c", "0000:86:00.0", "physnet1"),
        _vfs_on("8086", "154c", "0000:3b:00.1", "physnet2"),
        _vfs_on("8086", "154c", "0000:86:00.1", "physnet2",
                exclude=("0000:86:0a.6", "0000:86:0a.7")),
    ),
)

E810_HOST = HostProfile(
    name="e810",
    description="NIC host: a dual-port Intel E810-C with 16 VFs per port (physnet1, physnet2) "
    "and a single-port E810 offered whole (direct-physical) on physnet2",
    cards=(
        *_CHIPSET,
        Card(E810, "0000:5e:00.0", numa_node=0, ports=2, numvfs=16),
        Card(E810, "0000:af:00.0", numa_node=1),
    ),
    pool_attrs=("vendor_id", "product_id", PHYSICAL_NETWORK),
    pci_information=(
        _vfs_on("8086", "1889", "0000:5e:00.0", "physnet1"),
        _vfs_on("8086", "1889", "0000:5e:00.1", "physnet2"),
        _entry({"vendor_id": "8086", "product_id": "1592", "address": "0000:af:00.0"},
               {PHYSICAL_NETWORK: "physnet2"}),
    ),
)

CONNECTX_HOST = HostProfile(
    name="connectx",
    description="NIC host: a dual-port Mellanox ConnectX-5 (8 VFs per port, physnet1 and "
    "physnet2) and a ConnectX-6 (4 VFs, physnet1)",
    cards=(
        *_CHIPSET,
        Card(CONNECTX6, "0000:3b:00.0", numa_node=0, numvfs=4),
        Card(CONNECTX5, "0000:af:00.0", numa_node=1, ports=2, numvfs=8),
    ),
    pool_attrs=("vendor_id", "product_id", PHYSICAL_NETWORK),
    pci_information=(
        _vfs_on("15b3", "101c", "0000:3b:00.0", "physnet1"),
        _vfs_on("15b3", "1018", "0000:af:00.0", "physnet1"),
        _vfs_on("15b3", "1018", "0000:af:00.1", "physnet2"),
    ),
)

GPU_2NUMA = HostProfile(
    name="gpu-2numa",
    description="GPU host, two sockets of one NUMA node each (32 CPUs, 256 GiB and 16 1-GiB "
    "hugepages per node): four NVIDIA A100 on vfio-pci (two per node) and two Tesla T4 (one "
    "per node), all tagged e.group=gpu",
    cards=(
        *_CHIPSET,
        Card(A100, "0000:17:00.0", numa_node=0, bound_to="vfio-pci"),
        Card(A100, "0000:31:00.0", numa_node=0, bound_to="vfio-pci"),
        Card(T4, "0000:4b:00.0", numa_node=0),
        Card(A100, "0000:b1:00.0", numa_node=1, bound_to="vfio-pci"),
        Card(A100, "0000:ca:00.0", numa_node=1, bound_to="vfio-pci"),
        Card(T4, "0000:e3:00.0", numa_node=1),
    ),
    pool_attrs=("vendor_id", "product_id", "e.group"),
    pci_information=(_entry({"vendor_id": "10de"}, {"e.group": "gpu"}),),
    topology=Topology(sockets=2, cpus_per_node=32, memory_mb_per_node=262144,
                      hugepages={1048576: 16}),
)

QAT_HOST = HostProfile(
    name="qat",
    description="Crypto host: Intel QuickAssist C62x (3 PFs), DH895xCC and 4xxx, 4 VFs each; "
    "the VFs are the seed's encryption cards e.QAclass 1, 2 and 3",
    cards=(
        *_CHIPSET,
        Card(QAT_C62X, "0000:3d:00.0", numa_node=0, numvfs=4),
        Card(QAT_C62X, "0000:3f:00.0", numa_node=0, numvfs=4),
        Card(QAT_C62X, "0000:41:00.0", numa_node=0, numvfs=4),
        Card(QAT_4XXX, "0000:6b:00.0", numa_node=0, numvfs=4),
        Card(QAT_DH895XCC, "0000:88:00.0", numa_node=1, numvfs=4),
    ),
    pool_attrs=("e.QAclass",),
    pci_information=(
        _entry({"vendor_id": "8086", "product_id": "37c9"}, {"e.QAclass": "1"}),
        _entry({"vendor_id": "8086", "product_id": "0443"}, {"e.QAclass": "2"}),
        _entry({"vendor_id": "8086", "product_id": "4941"}, {"e.QAclass": "3"}),
    ),
)

MIXED = HostProfile(
    name="mixed",
    description="Everything on one host: X710 VFs on physnet1/physnet2 (one VF kept), "
    "ConnectX-5 VFs, A100 and T4 GPUs on two NUMA nodes, QuickAssist VFs, and an NVMe "
    "drive with no NUMA node",
    cards=(
        *_CHIPSET,
        Card(A100, "0000:17:00.0", numa_node=0, bound_to="vfio-pci"),
        Card(X710, "0000:3b:00.0", numa_node=0, ports=2, numvfs=4),
        Card(QAT_C62X, "0000:3d:00.0", numa_node=0, numvfs=4),
        Card(T4, "0000:4b:00.0", numa_node=0),
        Card(NVME_PM1733, "0000:5e:00.0", numa_node=None),
        Card(CONNECTX5, "0000:af:00.0", numa_node=1, numvfs=4),
        Card(A100, "0000:b1:00.0", numa_node=1, bound_to="vfio-pci"),
    ),
    pci_information=(
        _vfs_on("8086", "154c", "0000:3b:00.0", "physnet1"),
        _vfs_on("8086", "154c", "0000:3b:00.1", "physnet2", exclude=("0000:3b:0a.3",)),
        _vfs_on("15b3", "1018", "0000:af:00.0", "physnet1"),
        _entry({"vendor_id": "10de"}, {"e.group": "gpu"}),
        _entry({"vendor_id": "8086", "product_id": "37c9"}, {"e.QAclass": "1"}),
        _entry({"vendor_id": "144d", "product_id": "a824"}, {"e.group": "nvme"}),
    ),
)


def big(pfs: int = 4, vfs: int = 128, gpus: int = 8) -> HostProfile:
    """A large host for benchmarks: `pfs` single-port E810s with `vfs` VFs each (alternately
    on physnet1 and physnet2) and `gpus` A100s, spread over two NUMA nodes."""
    nics = [Card(E810, f"0000:{0x10 + 2 * i:02x}:00.0", numa_node=i % 2, numvfs=vfs)
            for i in range(pfs)]
    gpu_cards = [Card(A100, f"0000:{0x10 + 2 * (pfs + i):02x}:00.0", numa_node=i % 2,
                      bound_to="vfio-pci") for i in range(gpus)]
    return HostProfile(
        name=f"big-{pfs}x{vfs}-{gpus}gpu",
        description=f"{pfs} E810 PFs x {vfs} VFs and {gpus} A100 GPUs on two NUMA nodes",
        cards=(*_CHIPSET, *nics, *gpu_cards),
        pool_attrs=("vendor_id", "product_id", PHYSICAL_NETWORK),
        pci_information=(
            *(_vfs_on("8086", "1889", card.address, f"physnet{i % 2 + 1}")
              for i, card in enumerate(nics)),
            _entry({"vendor_id": "10de", "product_id": "20b5"}),
        ),
    )


PROFILES: dict[str, HostProfile] = {
    profile.name: profile
    for profile in (X710_2X, E810_HOST, CONNECTX_HOST, GPU_2NUMA, QAT_HOST, MIXED, big())
}
