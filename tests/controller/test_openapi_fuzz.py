"""Schemathesis against /openapi.json, in-process: whatever it sends, no 5xx, and every
answer matches the schema (status codes, content types, bodies)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from passthru.controller.app import create_app
from passthru.controller.settings import Settings
from passthru.pci.work import SHA256_HEADER

_ADMIN = "Bearer {}"
# These two assume the schema says everything about validity. Here it cannot: a PCI flavor
# value must compile, an extra spec must parse, a device address must be a PCI address, so
# well-shaped nonsense gets a 400; and the core's device dataclass reads "1" as the number
# 1 where the schema says integer. Every other check runs.
_MEANING_CHECKS = [positive_data_acceptance, negative_data_rejection]


def seeded_app(data_dir: Path) -> FastAPI:
    """A controller with something in every table, so that lookups also find things."""
    settings = Settings(data_dir)
    application = create_app(settings)
    token = settings.admin_token_path.read_text().strip()
    application.state.fuzz_token = token
    headers = {"Authorization": _ADMIN.format(token)}
    with TestClient(application, headers=headers) as client:
        for body in ({"pci-flavor": {"name": "bigGPU", "vendor_id": "8086"}},
                     {"pci-flavor": {"name": "QA", "e.QAclass": "(1|3)"}}):
            client.post("/v2/admin/os-pci-flavors", json=body).raise_for_status()
        client.post("/v2/admin/flavors", json={"flavor": {"name": "m1"}}).raise_for_status()
        client.post("/v2/admin/flavors/m1/os-extra_specs", json={
            "extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU"}}).raise_for_status()
        client.post("/v2/admin/networks", json={"network": {
            "name": "prod", "physical_network": "physnet1"}}).raise_for_status()
        client.put("/v2/agent/hosts/c1/inventory", json={"devices": [
            {"address": "0000:0a:00.0", "vendor_id": "8086", "product_id": "0001"}]}
                   ).raise_for_status()
        client.post("/v2/admin/servers", json={"server": {
            "name": "vm", "flavorRef": "m1", "networks": [
                {"uuid": "prod", "vnic_type": "direct"}]}}).raise_for_status()
        client.post("/v2/admin/images", json={"image": {
            "name": "disk", "disk_format": "raw"}}).raise_for_status()
        disk = b"\0" * 512
        client.put("/v2/admin/images/disk/file/disk", content=disk, headers={
            SHA256_HEADER: hashlib.sha256(disk).hexdigest()}).raise_for_status()
        client.post("/v2/admin/images", json={"image": {
            "name": "queued", "disk_format": "qcow2"}}).raise_for_status()
        client.post("/v2/admin/os-keypairs", json={"keypair": {"name": "key", "public_key": (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHKTe7aduWVrvrPD1m5Rf+stb1tuFgcsahO+z8j6QrsU"
        )}}).raise_for_status()
    return application


# Schemathesis collects one test per operation from a schema that exists at import time.
_DATA = tempfile.TemporaryDirectory(prefix="passthru-fuzz-")
APP = seeded_app(Path(_DATA.name))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    APP.state.store.close()
    _DATA.cleanup()


@schema.parametrize()
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": _ADMIN.format(APP.state.fuzz_token)},
                           excluded_checks=_MEANING_CHECKS)
