"""A VM's files on the host: the image cache, the disk overlay, the NoCloud seed ISO, the
console log tail and the NUMA node reader, with real qemu-img and pycdlib."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pycdlib
import pytest

from passthru.errors import InvalidInputError
from passthru.host.image_cache import ImageCache, ImageError
from passthru.host.instance import GIB, InstanceError, Instances, read_console_tail
from passthru.host.numa import node_cpus, parse_cpulist
from passthru.pci.work import ImageFile, ImagePart, ImageRef

SERVER = "6f0c3b2e-7c1d-4e53-9a3f-2b8f1f3c9a11"
KERNEL = b"not really a kernel\n" * 100


class Store:
    """The controller's side of `fetch`: serves `files`, counting the fetches."""

    def __init__(self, files: dict[ImagePart, bytes]) -> None:
        self.files = files
        self.fetched: list[ImagePart] = []

    def __call__(self, image_id: str, part: ImagePart, dest: Path) -> None:
        self.fetched.append(part)
        dest.write_bytes(self.files[part])


def image(**files: bytes) -> ImageRef:
    return ImageRef("img-1", "tiny", "qcow2", [
        ImageFile(ImagePart(part), hashlib.sha256(data).hexdigest(), len(data))
        for part, data in files.items()])


def test_a_file_is_fetched_once_and_kept_under_its_sha256(tmp_path: Path) -> None:
    store = Store({ImagePart.KERNEL: KERNEL})
    cache = ImageCache(tmp_path / "cache", store)
    ref = image(kernel=KERNEL)
    first = cache.get(ref, ImagePart.KERNEL)
    assert first is not None and first.read_bytes() == KERNEL
    assert first.name == f"sha256-{hashlib.sha256(KERNEL).hexdigest()}"
    assert cache.get(ref, ImagePart.KERNEL) == first
    assert store.fetched == [ImagePart.KERNEL]
    assert cache.get(ref, ImagePart.INITRD) is None


@pytest.mark.parametrize(("served", "message"), [
    (KERNEL[:-1] + b"X", r"has sha256 [0-9a-f]{64}, but the controller recorded"),
    (KERNEL[:100], r"is 100 bytes, but the controller recorded 2000"),
])
def test_a_corrupt_or_truncated_fetch_is_refused_and_leaves_nothing(
        tmp_path: Path, served: bytes, message: str) -> None:
    cache = ImageCache(tmp_path / "cache", Store({ImagePart.KERNEL: served}))
    with pytest.raises(ImageError, match=message):
        cache.get(image(kernel=KERNEL), ImagePart.KERNEL)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_failed_fetch_leaves_nothing(tmp_path: Path) -> None:
    def fail(image_id: str, part: ImagePart, dest: Path) -> None:
        dest.write_bytes(b"half")
        raise ConnectionResetError("connection reset by peer")

    cache = ImageCache(tmp_path / "cache", fail)
    with pytest.raises(ImageError, match=r"fetching the kernel of image tiny \(img-1\) "
                                         r"failed: connection reset by peer"):
        cache.get(image(kernel=KERNEL), ImagePart.KERNEL)
    assert list((tmp_path / "cache").iterdir()) == []


def base_image(tmp_path: Path, size: str = "64M") -> Path:
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def qemu_info(path: Path) -> dict[str, object]:
    done = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                          capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def test_overlay_is_backed_by_the_cached_image_at_the_flavors_size(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    files = instances.create(SERVER)
    base = base_image(tmp_path)
    disk = instances.create_disk(files, base, "qcow2", 1)
    info = qemu_info(disk)
    assert disk == tmp_path / "instances" / SERVER / "disk.qcow2"
    assert (info["format"], info["virtual-size"]) == ("qcow2", GIB)
    assert (info["backing-filename"], info["backing-filename-format"]) == (str(base), "qcow2")


def test_overlay_of_size_zero_takes_the_images_size(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    disk = instances.create_disk(instances.create(SERVER), base_image(tmp_path), "qcow2", 0)
    assert qemu_info(disk)["virtual-size"] == 64 << 20


def test_a_disk_smaller_than_the_image_is_refused(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    files = instances.create(SERVER)
    with pytest.raises(InstanceError, match=r"disk of 1 GiB is smaller than the image"):
        instances.create_disk(files, base_image(tmp_path, "2G"), "qcow2", 1)
    assert not files.disk.exists()


def test_an_image_not_in_its_claimed_format_is_refused(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * 4096)
    instances = Instances(tmp_path / "instances")
    with pytest.raises(InstanceError, match=r"qemu-img info failed: .*qcow2"):
        instances.create_disk(instances.create(SERVER), raw, "qcow2", 1)


def read_iso(path: Path) -> tuple[str, dict[str, str]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("meta-data", "user-data"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, joliet_path=f"/{name}")
            assert out.getvalue().decode() == files[name]
        return label, files
    finally:
        iso.close()


def test_seed_iso_is_labelled_cidata_with_meta_data_and_user_data(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    files = instances.create(SERVER)
    seed = instances.create_seed(files, SERVER, "web-1",
                                 {"bob": "ssh-ed25519 AAAAB bob@x", "al": "ssh-rsa AAA al"},
                                 "#!/bin/sh\necho hi\n")
    label, content = read_iso(seed)
    assert label == "cidata"
    assert json.loads(content["meta-data"]) == {
        "instance-id": SERVER, "local-hostname": "web-1",
        "public-keys": ["ssh-rsa AAA al", "ssh-ed25519 AAAAB bob@x"]}
    assert content["user-data"] == "#!/bin/sh\necho hi\n"


def test_seed_without_user_data_or_keys(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    seed = instances.create_seed(instances.create(SERVER), SERVER, "a: b", {}, None)
    _, content = read_iso(seed)
    assert json.loads(content["meta-data"]) == {"instance-id": SERVER, "local-hostname": "a: b"}
    assert content["user-data"] == "#cloud-config\n"


def test_remove_takes_the_whole_instance_and_a_second_create_is_refused(tmp_path: Path) -> None:
    instances = Instances(tmp_path / "instances")
    files = instances.create(SERVER)
    instances.create_disk(files, base_image(tmp_path), "qcow2", 0)
    instances.create_seed(files, SERVER, "h", {}, None)
    files.console_log.write_text("booted\n")
    with pytest.raises(InstanceError, match=r"exists already; destroy server"):
        instances.create(SERVER)
    instances.remove(SERVER)
    assert not files.directory.exists()
    instances.remove(SERVER)  # gone already: nothing to do


def test_console_tail_is_bounded_in_bytes_and_starts_on_a_whole_line(tmp_path: Path) -> None:
    files = Instances(tmp_path / "instances").create(SERVER)
    assert read_console_tail(files.console_log) is None
    files.console_log.write_bytes(b"".join(b"line %d\r\n" % n for n in range(10000)))
    whole = read_console_tail(files.console_log)
    assert whole is not None
    assert whole.split("\n")[-4:] == [
        "line 9997\r", "line 9998\r", "line 9999\r", ""]
    tail = read_console_tail(files.console_log, limit=100)
    assert tail is not None
    assert tail.endswith("line 9999\r\n") and len(tail) <= 100
    assert all(line.startswith("line ") for line in tail.split("\r\n")[:-1])  # none cut


def test_numa_node_cpus_come_from_sysfs(tmp_path: Path) -> None:
    node = tmp_path / "devices/system/node/node1"
    node.mkdir(parents=True)
    (node / "cpulist").write_text("2-3,6,8-9\n")
    assert node_cpus(tmp_path, 1) == (2, 3, 6, 8, 9)
    with pytest.raises(InvalidInputError, match=r"NUMA node 0 is not on this host"):
        node_cpus(tmp_path, 0)
    (node / "cpulist").write_text("\n")
    with pytest.raises(InvalidInputError, match=r"NUMA node 1 has no CPUs"):
        node_cpus(tmp_path, 1)
    with pytest.raises(InvalidInputError, match=r"'3-1' runs backwards"):
        parse_cpulist("3-1")
    assert node_cpus(Path("/sys"), 0)  # this machine's own node 0
