import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.host.config import HostConfigError, host_config_from, load_host_config, scan
from passthru.pci.device import PHYSICAL_NETWORK
from passthru.sim import PROFILES, nodedev_xml

DESIGN_EXAMPLE = """
controller = "http://127.0.0.1:8774"
host = "compute-1"
token = "secret"
source = "sysfs"
sysfs_root = "/sys"
libvirt_uri = "qemu:///system"
interval = 60
pool_attrs = ["vendor_id", "product_id", "e.physical_network"]

[[pci_information]]
match = { vendor_id = "8086", product_id = "154[cd]", address = "0000:0a:*.*" }
extra = { "e.physical_network" = "physnet1" }
exclude = ["0000:0a:10.1"]
"""


def write(tmp_path: Path, text: str, name: str = "host.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_design_example_loads(tmp_path: Path) -> None:
    config = load_host_config(write(tmp_path, DESIGN_EXAMPLE))
    assert (config.controller, config.host, config.token) == (
        "http://127.0.0.1:8774", "compute-1", "secret")
    assert (config.source, config.sysfs_root, config.interval) == ("sysfs", Path("/sys"), 60)
    assert config.pool_attrs == ("vendor_id", "product_id", PHYSICAL_NETWORK)
    [spec] = config.whitelist.specs
    assert spec.extra == {PHYSICAL_NETWORK: "physnet1"}
    assert len(spec.exclude) == 1


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSTHRU_TOKEN", "from-env")
    config = host_config_from({})
    assert config.host == socket.gethostname()
    assert config.token == "from-env"
    assert (config.source, config.sysfs_root, config.interval) == ("sysfs", Path("/sys"), 60)
    assert config.pool_attrs == ("vendor_id", "product_id", "e.*")
    assert config.whitelist.specs == ()


def test_relative_sysfs_root_is_next_to_the_file(tmp_path: Path) -> None:
    config = load_host_config(write(tmp_path, 'sysfs_root = "sim/sys"'))
    assert config.sysfs_root == tmp_path / "sim/sys"


def test_guest_settings_and_their_relative_paths(tmp_path: Path) -> None:
    config = load_host_config(write(tmp_path, 'instances_path = "vms"\n'
                                              'image_cache = "/srv/images"\n'
                                              'domain_type = "qemu"\n'
                                              'bridge_mappings = { physnet1 = "br-prov" }\n'))
    assert (config.instances_path, config.image_cache) == (tmp_path / "vms",
                                                           Path("/srv/images"))
    assert (config.domain_type, config.bridge_mappings) == ("qemu", {"physnet1": "br-prov"})
    defaults = host_config_from({})
    assert (defaults.instances_path, defaults.image_cache, defaults.domain_type) == (
        Path("/var/lib/passthru/instances"), Path("/var/lib/passthru/images"), "auto")


def test_seed_names_in_pool_attrs() -> None:
    config = host_config_from({"pool_attrs": ["device_id", "vendor_id", "physical_network"]})
    assert config.pool_attrs == ("product_id", "vendor_id", PHYSICAL_NETWORK)


GPU_TABLES = """
[[pci_information]]
match = { vendor_id = "10de", product_id = "20b5" }
extra = { "e.group" = "gpu" }
"""
GPU_NOVA = """device_spec = ['{"vendor_id": "10de", "product_id": "20b5", "e.group": "gpu"}']"""
GPU_SEED = """pci_information = "[ {'vendor_id': '10de', 'product_id': '20b5'}, {'e.group': 'gpu'} ]" """


@pytest.mark.parametrize("text", [GPU_TABLES, GPU_NOVA, GPU_SEED])
def test_three_spellings_take_the_same_devices(
    tmp_path: Path, sim_sysfs: Callable[[str], Path], text: str
) -> None:
    config = load_host_config(write(tmp_path, text))
    devices = scan(host_config_from({"sysfs_root": str(sim_sysfs("gpu-2numa"))}))
    taken = config.whitelist.taken(devices)
    assert [d.address for d in taken] == [
        "0000:17:00.0", "0000:31:00.0", "0000:b1:00.0", "0000:ca:00.0"]
    assert all(d.tags == {"e.group": "gpu"} for d in taken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intervall = 5", "unknown key 'intervall' (did you mean 'interval'?)"),
        ("interval = 0", "key 'interval': 0 s is out of range; re-scan every 1 s to 86400 s"),
        ('source = "udev"', "key 'source': Input should be 'sysfs' or 'libvirt' (got 'udev')"),
        ('domain_type = "xen"', "key 'domain_type': Input should be 'auto', 'kvm' or 'qemu'"),
        ('bridge_mappings = { physnet1 = "br/x" }',
         "key 'bridge_mappings': 'physnet1' = 'br/x' does not map a physical network"),
        ('pool_attrs = ["vendor"]', "pool attribute 'vendor' is not exposed by devices"),
        ("pci_information = 5", "key 'pci_information': write [[pci_information]] tables"),
        ('[[pci_information]]\nmatch = { vendor_id = "zz" }',
         "pci_information entry 1: match vendor_id 'zz' is not a hex number"),
        ('[[pci_information]]\nmatch = { product = "154c" }',
         '{"match": {"product": "154c"}}'),
        ("device_spec = ['{bad']", "device_spec line 1: not valid JSON"),
        ("device_spec = []\npci_information = []", "either pci_information or device_spec"),
        ("interval = ", "is not valid TOML"),
    ],
)
def test_errors_name_the_file_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HostConfigError) as error:
        load_host_config(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


@pytest.mark.parametrize("settings", [
    {"interval": 1, "order_interval": 0.05}, {"interval": 86400, "order_interval": 3600},
    {"host": "a" * 63 + "." + "b" * 63, "token": "x" * 4096},
    {"host": "compute_1.example.org", "bridge_mappings": {"phys net": "br-x"}},
])
def test_the_edges_of_every_range_are_taken(settings: dict[str, object]) -> None:
    config = host_config_from(settings)
    assert {key: getattr(config, key) for key in settings} == settings


@pytest.mark.parametrize(("settings", "expected"), [
    ({"order_interval": 0.01}, "key 'order_interval': 0.01 s is out of range; check power "
                               "states (and poll an older controller for orders) every 0.05 s to 3600 s"),
    ({"interval": 86401}, "key 'interval': 86401 s is out of range"),
    ({"interval": float("-inf")}, "key 'interval': -inf s is out of range"),
    ({"cpu_allocation_ratio": float("inf")}, "Input should be a finite number (got inf)"),
    ({"ram_allocation_ratio": 1e6}, "less than or equal to 1000"),
    ({"host": "h" * 256}, "the host name is 256 characters long ('hhhh"),
    ({"host": "-compute"}, "'-compute' is not a host name"),
    ({"host": "a..b"}, "'a..b' is not a host name"),
    ({"controller": "ftp://x"}, "'ftp://x' is not the controller's URL"),
    ({"token": "two words"}, "'two words' is not an agent token"),
    ({"libvirt_netns": ".."}, "'..' is not a network namespace name"),
    ({"sysfs_root": "/sys\0"}, "key 'sysfs_root': '/sys\\x00' holds a NUL character"),
    ({"bridge_mappings": {" physnet1": "br0"}}, "' physnet1' = 'br0' names no physical network"),
    ({"bridge_mappings": {"physnet1": "br 0"}}, "'physnet1' = 'br 0' does not map"),
    ({"pool_attrs": ["x" * 5000]}, "pool attribute 'xxxxxxxx"),
    ({"pci_information": [[[[[[[[[[]]]]]]]]]]}, "key 'pci_information' nests arrays or tables "
                                                "more than 8 levels deep"),
    ({"device_spec": ["[" * 100_000 + "]" * 100_000]},
     "device_spec line 1: nests JSON arrays or objects too deeply to read"),
    ({f"k{i}": 1 for i in range(1000)}, "(and 997 more problems)"),
])
def test_hostile_values_get_one_short_line(settings: dict[str, object], expected: str) -> None:
    with pytest.raises(HostConfigError) as error:
        host_config_from(settings)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message and len(message) < 2000


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HostConfigError, match=r"cannot read host config .*No such file"):
        load_host_config(tmp_path / "absent.toml")


def test_scan_reads_the_configured_source(
    tmp_path: Path, sim_sysfs: Callable[[str], Path]
) -> None:
    node = tmp_path / "node.xml"
    node.write_text(nodedev_xml(PROFILES["qat"]))
    from_sysfs = scan(host_config_from({"sysfs_root": str(sim_sysfs("qat"))}))
    from_libvirt = scan(host_config_from({"source": "libvirt", "libvirt_uri": f"test://{node}"}))
    assert [d.address for d in from_sysfs] == [d.address for d in from_libvirt]
    assert len(from_sysfs) == 28
    assert from_sysfs[-1].driver is not None and from_libvirt[-1].driver is None
