"""Images with files, keypairs, flavor disks and boots with cloud-init data, through the
`passthru` commands against a live controller."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import httpx

from passthru.errors import ConflictError, InvalidInputError, PassthruError
from tests.cli.runner import as_json, ok, run
from tests.support.live import ServedApp


def qcow2(path: Path, size: str = "32M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 1M", str(path)], check=True,
                   capture_output=True)
    return path


def refused(line: str, meaning: type[PassthruError] = InvalidInputError) -> str:
    result = run(line)
    assert result.exit_code == meaning.exit_code, result.output
    return " ".join(result.stderr.split())


def stored(live: ServedApp) -> list[Path]:
    return sorted(p for p in (live.data_dir / "images").rglob("*") if p.is_file())


def test_image_create_uploads_checked_files(cli_env: ServedApp, tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "debian.qcow2")
    image = as_json(f"passthru image-create debian --file {disk}")
    checksum = hashlib.sha256(disk.read_bytes()).hexdigest()
    assert (image["status"], image["disk_format"], image["virtual_size"], image["checksum"]) \
        == ("active", "qcow2", 32 << 20, checksum)
    assert stored(cli_env) == [cli_env.data_dir / "images" / image["id"] / "disk"]
    listed = ok("passthru image-list").stdout
    assert "debian" in listed and "active" in listed and "qcow2" in listed
    shown = ok("passthru image-show debian").stdout
    assert f"disk: {disk.stat().st_size} bytes, sha256 {checksum}" in " ".join(shown.split())

    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"\x7fkernel" * 100)
    initrd.write_bytes(b"initrd" * 100)
    raw = tmp_path / "root.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    direct = as_json(f"passthru image-create direct --file {raw} --kernel {kernel} "
                     f"--initrd {initrd} --property 'os_command_line=console=ttyS0 root=/dev/vda'")
    assert (direct["disk_format"], [f["part"] for f in direct["files"]]) == (
        "raw", ["kernel", "initrd", "disk"])
    assert direct["properties"] == {"os_command_line": "console=ttyS0 root=/dev/vda"}

    catalog = as_json("passthru image-create plain")
    assert (catalog["disk_format"], catalog["status"], catalog["files"]) == (
        None, "active", [])


def test_image_create_refuses_bad_files_and_leaves_no_image(cli_env: ServedApp,
                                                            tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    assert refused(f"passthru image-create img --file {tmp_path / 'nope.qcow2'}") == (
        f"error: --file {tmp_path / 'nope.qcow2'}: no such file")
    assert refused(f"passthru image-create img --file {disk} --disk-format vmdk") == (
        "error: disk_format 'vmdk' is not supported: hosts boot qcow2 or raw disks; "
        "convert it first: qemu-img convert -O qcow2 IN OUT")
    assert refused(f"passthru image-create img --file {disk} --disk-format raw") == (
        "error: image img was not created: not a raw image: qemu-img reads it as qcow2; if "
        "it is one, create the image with disk_format qcow2")
    assert refused(f"passthru image-create img --file {disk} --initrd {disk}") == (
        "error: --initrd needs --kernel: an initrd boots with a kernel")
    assert refused(f"passthru image-create img --kernel {disk}") == (
        "error: --kernel and --initrd belong to an image with a disk: give --file DISK too")
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(disk.read_bytes()[:200_000])
    assert refused(f"passthru image-create img --file {cut}").startswith(
        "error: image img was not created: the qcow2 image is damaged or truncated")
    assert as_json("passthru image-list") == []
    assert stored(cli_env) == []


def test_boot_with_a_key_and_user_data_reaches_the_host(cli_env: ServedApp,
                                                        tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@cli",
                    "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().strip()
    created = as_json(f"passthru keypair-create mykey --public-key {key.with_suffix('.pub')}")
    assert created["public_key"] == public
    assert created["fingerprint"].startswith("SHA256:")
    assert created["fingerprint"] in ok("passthru keypair-list").stdout
    assert refused(f"passthru keypair-create other --public-key {key}").startswith(
        "error: the public key must be one line")
    assert refused(f"passthru keypair-create other --public-key {tmp_path}/none.pub") == (
        f"error: --public-key {tmp_path}/none.pub: no such file")

    flavor = as_json("passthru flavor-create m1.disk --vcpus 2 --ram 1024 --disk 5")
    assert flavor["disk"] == 5
    as_json(f"passthru image-create debian --file {qcow2(tmp_path / 'd.qcow2')}")
    token = ok("passthru host-token compute-1").stdout.strip()
    agent = httpx.Client(base_url=f"{cli_env.url}/v2/agent/hosts/compute-1",
                         headers={"Authorization": f"Bearer {token}"})
    agent.put("/inventory", json={"devices": []}).raise_for_status()
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nhostname: ignored\n")
    server = as_json(f"passthru boot vm1 --flavor m1.disk --image debian --key-name mykey "
                     f"--user-data {user_data}")
    assert (server["status"], server["host"], server["key_name"]) == (
        "BUILD", "compute-1", "mykey")
    guest = agent.get("/orders").json()["spawn"][0]["guest"]
    assert (guest["disk_gb"], guest["public_keys"], guest["user_data"], guest["hostname"]) == (
        5, {"mykey": public}, user_data.read_text(), "vm1")
    assert guest["image"]["name"] == "debian"

    assert refused("passthru boot vm2 --flavor m1.disk --key-name nokey") == (
        "error: key_name: project admin has no keypair 'nokey' (list them with passthru "
        "keypair-list)")
    assert refused(f"passthru boot vm2 --flavor m1.disk --user-data {tmp_path}/none") == (
        f"error: --user-data {tmp_path}/none: no such file")
    assert refused("passthru image-delete debian", ConflictError) == (
        "error: image debian is used by 1 server(s); delete them first")
    ok("passthru delete vm1")
    ok("passthru image-delete debian")
    assert stored(cli_env) == []
    ok("passthru keypair-delete mykey")
    assert as_json("passthru keypair-list") == []
