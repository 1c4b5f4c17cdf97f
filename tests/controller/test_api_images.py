"""Images with files: uploads checked with the real qemu-img (and refused whole), agents
downloading the same bytes, and what a boot from an image puts in its spawn order."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.host.link import HttpLink, LinkError
from passthru.pci.work import SHA256_HEADER, ImagePart
from tests.controller.conftest import Api

V2 = "/v2/admin"
MiB = 1 << 20


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Small enough that a test can go past it.
    return Settings(tmp_path / "data", max_image_bytes=8 * MiB)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qcow2(path: Path, size: str = "16M") -> bytes:
    """A real qcow2 with data in its first 1 MiB."""
    qemu_img("create", "-q", "-f", "qcow2", str(path), size)
    subprocess.run(["qemu-io", "-c", f"write -P 0xab 0 {MiB}", str(path)], check=True,
                   capture_output=True)
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(api: Api, image: str, part: str, data: bytes | Iterator[bytes],
           checksum: str | None = None, token: str | None = None) -> Any:
    assert checksum is not None or isinstance(data, bytes)
    headers = {"Authorization": f"Bearer {token or api.admin}",
               SHA256_HEADER: checksum or sha(data)}  # type: ignore[arg-type]
    return api.client.put(f"{V2}/images/{image}/file/{part}", content=data, headers=headers)


def new_image(api: Api, name: str, disk_format: str | None = "qcow2",
              **properties: str) -> dict[str, Any]:
    body = {"image": {"name": name, "disk_format": disk_format, "properties": properties}}
    return dict(api.ok("POST", f"{V2}/images", json=body)["image"])


def stored_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.image_dir.rglob("*") if p.is_file())


def message(response: Any) -> str:
    return str(response.json()["error"]["message"])


def test_a_qcow2_disk_makes_the_image_active_and_agents_fetch_the_same_bytes(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    image = new_image(api, "debian")
    assert (image["status"], image["disk_format"], image["files"]) == ("queued", "qcow2", [])
    data = qcow2(tmp_path / "disk.qcow2")
    answer = upload(api, "debian", "disk", data)
    assert answer.status_code == 200, answer.text
    shown = api.ok("GET", f"{V2}/images/debian")["image"]
    assert shown == answer.json()["image"]
    assert (shown["status"], shown["virtual_size"], shown["size"], shown["checksum"]) == (
        "active", 16 * MiB, len(data), sha(data))
    assert shown["files"] == [{"part": "disk", "sha256": sha(data), "size": len(data)}]
    assert stored_files(settings) == [settings.image_dir / image["id"] / "disk"]

    path = f"/v2/agent/hosts/compute-1/images/{image['id']}/file/disk"
    fetched = api.call("GET", path, api.agent("compute-1"), expect=200)
    assert fetched.content == data
    assert fetched.headers[SHA256_HEADER] == sha(data)
    assert api.call("GET", path, expect=200).content == data  # admin too
    refused = api.call("GET", path, api.agent("compute-2"), expect=403)
    assert "passthru host-token compute-1" in message(refused)
    missing = api.call("GET", path.replace("/disk", "/kernel"), api.agent("compute-1"),
                       expect=404)
    assert message(missing) == "image debian has no kernel file (has it been uploaded?)"

    again = upload(api, "debian", "disk", data)
    assert again.status_code == 409
    assert "is active: its files do not change" in message(again)


def test_the_agent_link_streams_an_image_file_to_disk(api: Api, tmp_path: Path) -> None:
    image = new_image(api, "debian")
    data = qcow2(tmp_path / "disk.qcow2")
    assert upload(api, "debian", "disk", data).status_code == 200
    api.client.headers["Authorization"] = f"Bearer {api.agent('compute-1')}"
    link = HttpLink(api.client, "compute-1")
    dest = tmp_path / "cache" / "disk"
    dest.parent.mkdir()
    link.fetch_image(image["id"], ImagePart.DISK, dest)
    assert dest.read_bytes() == data
    kernel = tmp_path / "cache" / "kernel"
    with pytest.raises(LinkError, match=r"\(404\): image debian has no kernel file"):
        link.fetch_image(image["id"], ImagePart.KERNEL, kernel)
    assert not kernel.exists()


def test_a_large_virtual_size_is_kept_on_every_store(db_url: str, tmp_path: Path) -> None:
    settings = Settings(tmp_path / "data", db_url=db_url)
    with TestClient(create_app(settings)) as client:
        api = Api(client, settings.admin_token_path.read_text().strip())
        new_image(api, "big")
        answer = upload(api, "big", "disk", qcow2(tmp_path / "big.qcow2", "10G"))
        assert answer.status_code == 200, answer.text
        assert api.ok("GET", f"{V2}/images/big")["image"]["virtual_size"] == 10 << 30


def test_a_raw_disk_streamed_in_chunks_is_taken_with_its_size(api: Api,
                                                             settings: Settings) -> None:
    new_image(api, "blank", "raw")
    chunks = [b"\0" * MiB, b"\1" * MiB]
    answer = upload(api, "blank", "disk", iter(chunks), sha(b"".join(chunks)))
    assert answer.status_code == 200, answer.text
    image = answer.json()["image"]
    assert (image["status"], image["virtual_size"], image["size"]) == (
        "active", 2 * MiB, 2 * MiB)


def _truncated(tmp_path: Path) -> bytes:
    whole = qcow2(tmp_path / "whole.qcow2")
    return whole[:len(whole) // 2]


def _backed(tmp_path: Path) -> bytes:
    path = tmp_path / "backed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(path))
    return path.read_bytes()


def _data_file(tmp_path: Path) -> bytes:
    path = tmp_path / "external.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
             str(path), "1M")
    return path.read_bytes()


REFUSED = [
    ("raw declared qcow2", "qcow2", lambda t: b"\0" * MiB,
     "not a qcow2 image: qemu-img reads it as raw; if it is one, create the image with "
     "disk_format raw"),
    ("garbage", "qcow2", lambda t: b"#!/bin/sh\necho not a disk\n" * 100,
     "not a qcow2 image: qemu-img reads it as raw"),
    ("truncated qcow2", "qcow2", _truncated, "the qcow2 image is damaged or truncated "
     "(qemu-img check: "),
    ("qcow2 with a backing file", "qcow2", _backed,
     "a qcow2 with a backing file (/etc/passwd) is refused"),
    ("qcow2 with a data file", "qcow2", _data_file, "a qcow2 with an external data file"),
    ("qcow2 declared raw", "raw", lambda t: qcow2(t / "q.qcow2"),
     "not a raw image: qemu-img reads it as qcow2"),
    ("empty raw", "raw", lambda t: b"", "the disk file is empty"),
]


@pytest.mark.parametrize(("case", "disk_format", "make", "expected"), REFUSED,
                         ids=[case[0] for case in REFUSED])
def test_a_disk_that_is_not_what_it_claims_is_refused_and_leaves_nothing(
        api: Api, settings: Settings, tmp_path: Path, case: str, disk_format: str,
        make: Any, expected: str) -> None:
    new_image(api, "img", disk_format)
    answer = upload(api, "img", "disk", make(tmp_path))
    assert answer.status_code == 400, answer.text
    assert message(answer).startswith(expected), message(answer)
    image = api.ok("GET", f"{V2}/images/img")["image"]
    assert (image["status"], image["files"], image["virtual_size"]) == ("queued", [], None)
    assert stored_files(settings) == []


def test_a_checksum_mismatch_or_an_oversized_file_leaves_nothing(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    new_image(api, "img")
    data = qcow2(tmp_path / "disk.qcow2")
    answer = upload(api, "img", "disk", data, checksum=sha(b"something else"))
    assert answer.status_code == 400
    assert message(answer).startswith(f"the file's SHA-256 is {sha(data)}, not "
                                      f"{sha(b'something else')} as X-Image-Sha256 says")
    big = [b"\0" * MiB] * 9
    # Once declared in Content-Length, once found out while streaming in chunks.
    answer = upload(api, "img", "disk", b"".join(big))
    assert answer.status_code == 413
    assert message(answer) == (f"the file is {9 * MiB} bytes; the limit is {8 * MiB} bytes "
                               "(passthru serve --max-image-size)")
    answer = upload(api, "img", "disk", iter(big), sha(b"".join(big)))
    assert answer.status_code == 413
    assert message(answer).startswith(f"the file is over {8 * MiB} bytes")
    assert api.ok("GET", f"{V2}/images/img")["image"]["status"] == "queued"
    assert stored_files(settings) == []
    answer = upload(api, "img", "disk", data, checksum="not-hex")
    assert answer.status_code == 422


def test_only_qcow2_and_raw_are_taken(api: Api) -> None:
    for disk_format in ("vmdk", "vdi", "iso"):
        answer = api.call("POST", f"{V2}/images", json={"image": {
            "name": "win", "disk_format": disk_format}}, expect=400)
        assert message(answer) == (
            f"disk_format {disk_format!r} is not supported: hosts boot qcow2 or raw disks; "
            "convert it first: qemu-img convert -O qcow2 IN OUT")
    assert api.ok("GET", f"{V2}/images")["images"] == []


def test_a_catalog_only_image_takes_no_files_and_members_upload_none(api: Api) -> None:
    api.ok("POST", f"{V2}/images", json={"image": {"name": "catalog"}})
    shown = api.ok("GET", f"{V2}/images/catalog")["image"]
    assert (shown["status"], shown["disk_format"], shown["files"]) == ("active", None, [])
    answer = upload(api, "catalog", "disk", b"\0" * 512)
    assert answer.status_code == 409
    assert message(answer).startswith("image catalog is catalog-only")
    new_image(api, "img")
    member = api.member("tenant1")
    answer = api.client.put("/v2/tenant1/images/img/file/disk", content=b"\0",
                            headers={"Authorization": f"Bearer {member}",
                                     SHA256_HEADER: sha(b"\0")})
    assert answer.status_code == 403


def test_a_kernel_image_uploads_kernel_and_initrd_before_its_disk(
        api: Api, tmp_path: Path) -> None:
    new_image(api, "direct", "raw", os_command_line="console=ttyS0 root=/dev/vda")
    initrd_first = new_image(api, "initrd-only", "raw")
    assert upload(api, initrd_first["id"], "initrd", b"initrd").status_code == 200
    answer = upload(api, "initrd-only", "disk", b"\0" * 512)
    assert answer.status_code == 400
    assert message(answer) == ("image initrd-only has an initrd but no kernel: upload its "
                               "kernel before its disk")
    for part, data in (("kernel", b"kernel"), ("initrd", b"initrd"), ("disk", b"\0" * 4096)):
        answer = upload(api, "direct", part, data)
        assert answer.status_code == 200, answer.text
    image = answer.json()["image"]
    assert [f["part"] for f in image["files"]] == ["kernel", "initrd", "disk"]
    assert image["status"] == "active"
    late = upload(api, "direct", "kernel", b"kernel")
    assert late.status_code == 409


def test_an_image_in_use_is_not_deleted_and_a_deleted_one_leaves_no_files(
        api: Api, settings: Settings, tmp_path: Path) -> None:
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1"}})
    new_image(api, "queued")
    answer = api.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1", "imageRef": "queued"}}, expect=409)
    assert message(answer) == (
        "image queued is queued: its disk has not been uploaded yet; upload it (PUT "
        ".../images/{id}/file/disk, or create the image with passthru image-create --file) "
        "or boot another image")
    assert upload(api, "queued", "disk", qcow2(tmp_path / "d.qcow2")).status_code == 200
    server = api.ok("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1", "imageRef": "queued"}})["server"]
    answer = api.call("DELETE", f"{V2}/images/queued", expect=409)
    assert message(answer) == "image queued is used by 1 server(s); delete them first"
    assert len(stored_files(settings)) == 1
    api.call("DELETE", f"{V2}/servers/{server['id']}", expect=204)
    api.call("DELETE", f"{V2}/images/queued", expect=204)
    assert stored_files(settings) == []
    assert api.ok("GET", f"{V2}/images")["images"] == []


ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHKTe7aduWVrvrPD1m5Rf+stb1tuFgcsahO+z8j6QrsU "
           "me@laptop")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@pytest.fixture
def host(api: Api) -> str:
    """compute-1, up, with one device and no PCI flavor asking for it."""
    token = api.agent("compute-1")
    api.ok("PUT", "/v2/agent/hosts/compute-1/inventory", token, json={"devices": [
        {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "0001"}]})
    return token


def test_a_boot_puts_image_size_keys_user_data_and_normal_nics_in_the_spawn_order(
        api: Api, host: str, tmp_path: Path) -> None:
    api.ok("POST", f"{V2}/flavors", json={"flavor": {
        "name": "m1.disk", "vcpus": 2, "ram": 1024, "disk": 10}})
    flavor = api.ok("GET", f"{V2}/flavors/m1.disk")["flavor"]
    assert flavor["disk"] == 10
    image = new_image(api, "debian", "qcow2", os_command_line="console=ttyS0")
    data = qcow2(tmp_path / "disk.qcow2")
    assert upload(api, "debian", "disk", data).status_code == 200
    api.ok("POST", f"{V2}/networks", json={"network": {
        "name": "lan", "physical_network": "physnet1"}})
    api.ok("POST", f"{V2}/os-keypairs", json={"keypair": {"name": "mykey",
                                                           "public_key": ED25519}})
    user_data = "#cloud-config\npackages: [htop]\n"
    server = api.ok("POST", f"{V2}/servers", json={"server": {
        "name": "Web_Server.1", "flavorRef": "m1.disk", "imageRef": "debian",
        "key_name": "mykey", "user_data": b64(user_data), "networks": [{"uuid": "lan"}]}}
                    )["server"]
    assert (server["status"], server["host"], server["key_name"]) == (
        "BUILD", "compute-1", "mykey")
    port = api.ok("GET", f"{V2}/ports/{server['ports'][0]}")["port"]

    orders = api.ok("GET", "/v2/agent/hosts/compute-1/orders", host)
    order = orders["spawn"][0]
    assert (order["server_uuid"], order["vcpus"], order["ram_mb"], order["devices"]) == (
        server["id"], 2, 1024, [])
    assert order["guest"] == {
        "image": {"id": image["id"], "name": "debian", "disk_format": "qcow2",
                  "files": [{"part": "disk", "sha256": sha(data), "size": len(data)}],
                  "kernel_args": "console=ttyS0"},
        "disk_gb": 10, "hostname": "web-server-1", "public_keys": {"mykey": ED25519},
        "user_data": user_data}
    assert [(n["port"]["port_id"], n["port"]["mac"], n["network"]["name"],
             n["network"]["physical_network"]) for n in order["nics"]] == [
        (port["id"], port["mac_address"], "lan", "physnet1")]

    # A key still to be put into a server being built stays.
    answer = api.call("DELETE", f"{V2}/os-keypairs/mykey", expect=409)
    assert "named by 1 server(s) still being built" in message(answer)


@pytest.mark.parametrize(("user_data", "key_name", "expected"), [
    ("not base64!", None, "user_data is not valid base64; send the file base64-encoded "
     "(passthru boot --user-data FILE does it)"),
    (b64(b"\xff\xfe binary"), None, "user_data is not UTF-8 text once decoded"),
    (b64("x" * (64 * 1024 + 1)), None, f"user_data is {64 * 1024 + 1} bytes decoded; at "
     "most 65536 are taken (as Nova)"),
    (None, "nokey", "key_name: project admin has no keypair 'nokey' (list them with "
     "passthru keypair-list)"),
])
def test_bad_user_data_or_an_unknown_key_refuse_the_boot(
        api: Api, user_data: str | None, key_name: str | None, expected: str) -> None:
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1"}})
    answer = api.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1", "user_data": user_data, "key_name": key_name}},
                      expect=400)
    assert message(answer).startswith(expected), message(answer)
    assert api.ok("GET", f"{V2}/servers")["servers"] == []


def test_user_data_may_come_with_line_breaks_and_the_key_of_another_project_is_unknown(
        api: Api, host: str) -> None:
    api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1"}})
    api.ok("POST", "/v2/other/os-keypairs", json={"keypair": {"name": "theirs",
                                                               "public_key": ED25519}})
    answer = api.call("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1", "key_name": "theirs"}}, expect=400)
    assert "project admin has no keypair 'theirs'" in message(answer)
    text = "#!/bin/sh\n" + "echo hello\n" * 20
    encoded = b64(text)
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    api.ok("POST", f"{V2}/servers", json={"server": {
        "name": "vm", "flavorRef": "m1", "user_data": wrapped}})
    order = api.ok("GET", "/v2/agent/hosts/compute-1/orders", host)["spawn"][0]
    assert order["guest"]["user_data"] == text
    assert (order["guest"]["image"], order["guest"]["public_keys"], order["nics"]) == (
        None, {}, [])
