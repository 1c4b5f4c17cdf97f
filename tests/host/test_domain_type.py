"""The domain type probe: `auto` picks kvm only when a kernel really prints under KVM.

The "emulators" here are small scripts standing in for qemu, so that each outcome
(prints the banner, aborts, hangs silently) runs as a real process; the probe with the
real qemu runs in tests/host/test_real_guest.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from passthru.host import domain_type
from passthru.host.domain_type import kvm_runs_guests, probe_kernel, resolve_domain_type
from passthru.host.libvirt_driver import LibvirtDriver


def emulator(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_kernel_that_prints_its_banner_under_kvm_means_kvm(tmp_path: Path) -> None:
    qemu = emulator(tmp_path, "works", 'echo "[    0.000000] Linux version 6.1"; sleep 60')
    started = time.monotonic()
    assert kvm_runs_guests(qemu, tmp_path / "vmlinuz")
    assert time.monotonic() - started < 30  # the probe stopped qemu once it had the banner


def test_qemu_that_aborts_or_never_prints_means_tcg(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain_type, "PROBE_SECONDS", 1.0)
    aborts = emulator(tmp_path, "aborts", "echo 'Probing EDD'; echo 'failed to set MSR' >&2; "
                                         "exit 134")
    silent = emulator(tmp_path, "silent", "echo 'Probing EDD'; sleep 60")
    assert not kvm_runs_guests(aborts, tmp_path / "vmlinuz")
    assert not kvm_runs_guests(silent, tmp_path / "vmlinuz")
    assert not kvm_runs_guests(str(tmp_path / "missing"), tmp_path / "vmlinuz")


def test_explicit_settings_are_kept_and_a_libvirt_without_kvm_gets_qemu() -> None:
    with LibvirtDriver("test:///default") as driver:
        assert resolve_domain_type("kvm", driver) == "kvm"
        assert resolve_domain_type("qemu", driver) == "qemu"
        assert resolve_domain_type("auto", driver) == "qemu"  # the test driver offers no KVM


def test_the_probe_kernel_is_the_newest_readable_one(tmp_path: Path) -> None:
    assert probe_kernel(tmp_path) is None
    old, new = tmp_path / "vmlinuz-6.1.0-1-amd64", tmp_path / "vmlinuz-6.1.0-2-amd64"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (1, 1))
    assert probe_kernel(tmp_path) == new
