"""Keypairs through the API: real keys from ssh-keygen taken with its fingerprint, broken
ones refused with the reason, each project seeing only its own."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.controller.conftest import Api


def keygen(tmp_path: Path, kind: str, *options: str) -> tuple[str, str]:
    """A new public key line and its fingerprint, as ssh-keygen prints them."""
    path = tmp_path / f"id_{kind}{'_'.join(options)}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *options, "-N", "", "-C", "me@host",
                    "-f", str(path)], check=True)
    public = path.with_suffix(".pub").read_text().strip()
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(path.with_suffix(".pub"))],
                            check=True, capture_output=True, text=True).stdout
    return public, listed.split()[1]


@pytest.mark.parametrize("options", [("ed25519",), ("rsa", "-b", "2048"),
                                     ("ecdsa", "-b", "256"), ("ecdsa", "-b", "384"),
                                     ("ecdsa", "-b", "521")], ids=lambda o: "-".join(o))
def test_openssh_public_keys_are_taken_with_ssh_keygens_fingerprint(
        api: Api, tmp_path: Path, options: tuple[str, ...]) -> None:
    public, fingerprint = keygen(tmp_path, *options)
    created = api.ok("POST", "/v2/admin/os-keypairs", json={"keypair": {
        "name": "k", "public_key": public + "\n"}})["keypair"]
    assert created == {"name": "k", "type": public.split()[0], "public_key": public,
                       "fingerprint": fingerprint}
    assert api.ok("GET", "/v2/admin/os-keypairs/k")["keypair"] == created
    assert api.ok("GET", "/v2/admin/os-keypairs") == {"keypairs": [{"keypair": created}]}


def _wire(*parts: bytes) -> str:
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).decode()


E65537 = b"\x01\x00\x01"
SMALL_MODULUS = b"\x00" + bytes(64)
P384_POINT = b"\x04" + bytes(96)
ADVICE = "give the .pub file ssh-keygen wrote (e.g. ~/.ssh/id_ed25519.pub)"
BAD = [
    ("", "the public key must be one line 'TYPE BASE64 [COMMENT]'"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
     "-----END OPENSSH PRIVATE KEY-----", "the public key must be one line"),
    ("BEGIN OPENSSH PRIVATE KEY b3BlbnNzaC1rZXktdjEAAAAA", "this is a private key"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "public key type 'ssh-dss' is not one of ssh-ed25519, "
     "ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521"),
    ("ssh-ed25519", "the ssh-ed25519 public key has no key after its type"),
    ("ssh-ed25519 not*base64 me", "the ssh-ed25519 public key's body is not base64"),
    (f"ssh-rsa {_wire(b'ssh-ed25519', bytes(32))}",
     "the public key line says ssh-rsa but its body is a 'ssh-ed25519' key"),
    (f"ssh-ed25519 {_wire(b'ssh-ed25519', bytes(31))}",
     "the ssh-ed25519 public key is damaged: an ed25519 key is 32 bytes"),
    (f"ssh-ed25519 {_wire(b'ssh-ed25519', bytes(32))[:-8]}",
     "the ssh-ed25519 public key is damaged: it ends before its key"),
    (f"ssh-ed25519 {_wire(b'ssh-ed25519', bytes(32), b'more')}",
     "the ssh-ed25519 public key is damaged: extra bytes follow the key"),
    (f"ssh-rsa {_wire(b'ssh-rsa', E65537, SMALL_MODULUS)}",
     "the ssh-rsa public key is damaged: an RSA key needs at least 1024 bits"),
    (f"ssh-rsa {_wire(b'ssh-rsa', E65537)}",
     "the ssh-rsa public key is damaged: it ends before its modulus"),
    (f"ecdsa-sha2-nistp256 {_wire(b'ecdsa-sha2-nistp256', b'nistp384', P384_POINT)}",
     "the ecdsa-sha2-nistp256 public key is damaged: it names curve 'nistp384'"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=range(len(BAD)))
def test_broken_public_keys_are_refused_with_the_reason(api: Api, text: str,
                                                        expected: str) -> None:
    answer = api.call("POST", "/v2/admin/os-keypairs", json={"keypair": {
        "name": "k", "public_key": text or " "}}, expect=400)
    message = answer.json()["error"]["message"]
    assert message.startswith(expected), message
    assert message.endswith(ADVICE)
    assert api.ok("GET", "/v2/admin/os-keypairs") == {"keypairs": []}


def test_keypairs_belong_to_their_project(api: Api, tmp_path: Path) -> None:
    public, _ = keygen(tmp_path, "ed25519")
    alice, bob = api.member("alice"), api.member("bob")
    body = {"keypair": {"name": "laptop", "public_key": public}}
    api.ok("POST", "/v2/alice/os-keypairs", alice, json=body)
    api.ok("POST", "/v2/bob/os-keypairs", bob, json=body)  # the same name elsewhere
    again = api.call("POST", "/v2/alice/os-keypairs", alice, json=body, expect=409)
    assert again.json()["error"]["message"] == (
        "project alice has a keypair named 'laptop' already")
    api.call("GET", "/v2/bob/os-keypairs", alice, expect=403)
    api.call("DELETE", "/v2/alice/os-keypairs/laptop", alice, expect=204)
    gone = api.call("GET", "/v2/alice/os-keypairs/laptop", alice, expect=404)
    assert gone.json()["error"]["message"] == (
        "project alice has no keypair 'laptop' (list them with passthru keypair-list)")
    assert [k["keypair"]["name"] for k in
            api.ok("GET", "/v2/bob/os-keypairs", bob)["keypairs"]] == ["laptop"]
