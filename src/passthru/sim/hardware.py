"""Real PCI hardware, as the kernel shows it: ids, class, drivers and SR-IOV geometry.

The values are those of the actual products (pci.ids names, in-tree driver names, first-VF
offsets), so a simulated host looks to discovery exactly like the real machine would.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VfModel:
    """The virtual functions of an SR-IOV device.

    `offset` is the SR-IOV "First VF Offset": VF i of the card's k-th PF sits at routing id
    card_first_function + offset + k * totalvfs + i, which is how the kernel numbers them
    (e.g. the VFs of an X710's 0000:3b:00.1 start at 0000:3b:0a.0).
    """

    product_id: str
    driver: str | None
    offset: int
    subsystem_device_id: str = "0000"


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """One kind of PCI function. `oui` is set for network devices (they get a netdev)."""

    key: str
    vendor_id: str
    product_id: str
    dev_class: str
    driver: str | None
    subsystem_vendor_id: str
    subsystem_device_id: str
    totalvfs: int = 0
    vf: VfModel | None = None
    oui: str | None = None


X710 = DeviceModel(
    "x710", "8086", "1572", "020000", "i40e", "8086", "0001",
    totalvfs=64, vf=VfModel("154c", "iavf", offset=16), oui="3c:fd:fe",
)
E810 = DeviceModel(
    "e810", "8086", "1592", "020000", "ice", "8086", "0002",
    totalvfs=128, vf=VfModel("1889", "iavf", offset=8), oui="b4:96:91",
)
CONNECTX5 = DeviceModel(
    "connectx-5", "15b3", "1017", "020000", "mlx5_core", "15b3", "0008",
    totalvfs=16, vf=VfModel("1018", "mlx5_core", offset=2), oui="0c:42:a1",
)
CONNECTX6 = DeviceModel(
    "connectx-6", "15b3", "101b", "020000", "mlx5_core", "15b3", "0006",
    totalvfs=16, vf=VfModel("101c", "mlx5_core", offset=2), oui="b8:ce:f6",
)
I350 = DeviceModel(
    "i350", "8086", "1521", "020000", "igb", "8086", "0001",
    totalvfs=7, vf=VfModel("1520", "igbvf", offset=128), oui="a0:36:9f",
)
A100 = DeviceModel("a100", "10de", "20b5", "030200", "nvidia", "10de", "1533")
T4 = DeviceModel("t4", "10de", "1eb8", "030200", "nvidia", "10de", "12a2")
QAT_C62X = DeviceModel(
    "qat-c62x", "8086", "37c8", "0b4000", "c6xx", "8086", "35c5",
    totalvfs=16, vf=VfModel("37c9", "c6xxvf", offset=8),
)
QAT_DH895XCC = DeviceModel(
    "qat-dh895xcc", "8086", "0435", "0b4000", "dh895xcc", "8086", "0001",
    totalvfs=32, vf=VfModel("0443", "dh895xccvf", offset=8),
)
QAT_4XXX = DeviceModel(
    "qat-4xxx", "8086", "4940", "0b4000", "4xxx", "8086", "0000",
    totalvfs=16, vf=VfModel("4941", "4xxxvf", offset=1),
)
NVME_PM1733 = DeviceModel("pm1733", "144d", "a824", "010802", "nvme", "144d", "a801")
HOST_BRIDGE = DeviceModel("skylake-dmi", "8086", "2020", "060000", None, "8086", "0000")

MODELS: dict[str, DeviceModel] = {
    model.key: model
    for model in (
        X710, E810, CONNECTX5, CONNECTX6, I350, A100, T4,
        QAT_C62X, QAT_DH895XCC, QAT_4XXX, NVME_PM1733, HOST_BRIDGE,
    )
}
