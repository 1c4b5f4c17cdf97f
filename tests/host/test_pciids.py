from pathlib import Path

from passthru.host.pciids import PCI_IDS_PATHS, first_pci_ids, parse_pci_ids

SAMPLE = """\
# comment
8086  Intel Corporation
\t1572  Ethernet Controller X710 for 10GbE SFP+
\t\t8086 0001  Ethernet Converged Network Adapter X710-4
# a comment between devices
\t154C  Ethernet Virtual Function 700 Series
10de  NVIDIA Corporation
\t20b5  GA100 [A100 PCIe 80GB]
C 02  Network controller
\t00  Ethernet controller
"""


def test_vendor_and_device_lines_are_read() -> None:
    ids = parse_pci_ids(SAMPLE.splitlines())
    assert ids.vendor_name("8086") == "Intel Corporation"
    assert ids.product_name("8086", "1572") == "Ethernet Controller X710 for 10GbE SFP+"
    assert ids.product_name("8086", "154c") == "Ethernet Virtual Function 700 Series"
    assert ids.product_name("10de", "20b5") == "GA100 [A100 PCIe 80GB]"


def test_subsystems_and_classes_are_not_names() -> None:
    ids = parse_pci_ids(SAMPLE.splitlines())
    assert ids.product_name("8086", "8086") is None
    assert ids.vendor_name("c 02") is None
    assert ids.product_name("10de", "00") is None
    assert set(ids.vendors) == {"8086", "10de"}


def test_unknown_ids_have_no_name() -> None:
    ids = parse_pci_ids(SAMPLE.splitlines())
    assert ids.vendor_name("abcd") is None
    assert ids.product_name("8086", "ffff") is None


def test_missing_database_gives_no_names(tmp_path: Path) -> None:
    ids = first_pci_ids([tmp_path / "none.ids"])
    assert ids.vendor_name("8086") is None


def test_first_database_found_is_used(tmp_path: Path) -> None:
    (tmp_path / "pci.ids").write_text(SAMPLE)
    ids = first_pci_ids([tmp_path / "missing", tmp_path / "pci.ids"])
    assert ids.vendor_name("10de") == "NVIDIA Corporation"


def test_system_database_knows_the_simulated_hardware() -> None:
    # scripts/setup.sh installs the pci.ids package.
    ids = first_pci_ids(PCI_IDS_PATHS)
    assert ids.product_name("8086", "1572") == "Ethernet Controller X710 for 10GbE SFP+"
    assert ids.product_name("8086", "37c9") is not None
    assert ids.product_name("15b3", "1018") is not None
