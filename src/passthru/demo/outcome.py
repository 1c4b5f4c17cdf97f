"""What a use case must have achieved, checked against what the controller reports.

A use case is met only when every one of its checks passed on the real outcome (server
status, host, devices and their tags, the agent's VF settings); nothing is assumed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from passthru.client import ApiError, Client

SETTLED = ("ACTIVE", "ERROR")


@dataclass(frozen=True, slots=True)
class Check:
    """One expectation: `what` was expected, `seen` is what was found."""

    what: str
    passed: bool
    seen: str = ""


def check(what: str, passed: bool, seen: object = "") -> Check:
    return Check(what, bool(passed), str(seen))


def met(checks: Iterable[Check]) -> bool:
    listed = list(checks)
    return bool(listed) and all(c.passed for c in listed)


def server(api: Client, name: str) -> dict[str, Any]:
    return dict(api.call("GET", api.tenant(f"/servers/{name}"))["server"])


def settled(api: Client, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """The server once its host's agent made it ACTIVE or ERROR (or as it is when
    `timeout` runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = server(api, name)
        if found["status"] in SETTLED or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def devices(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Every device the server holds, across its PCI requests."""
    return [device for request in found["pci_requests"] for device in request["devices"]]


def ids(device: dict[str, Any]) -> str:
    """`vendor:product` of a device."""
    return f"{device['vendor_id']}:{device['product_id']}"


def tagged(held: Iterable[dict[str, Any]], tag: str) -> str:
    """Each device's address with its value of `tag`, to show what a check saw."""
    return "; ".join(f"{d['address']} {tag}={d['tags'].get(tag)}" for d in held)


def port_devices(found: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The device of each port, by port id."""
    return {request["request"]["port_id"]: device for request in found["pci_requests"]
            if request["request"]["port_id"] for device in request["devices"]}


def exists(api: Client, name: str) -> bool:
    try:
        server(api, name)
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


def active_on(found: dict[str, Any], hosts: Iterable[str]) -> list[Check]:
    """The server is ACTIVE on one of `hosts`."""
    expected = sorted(hosts)
    name = found["name"]
    return [
        check(f"{name} is ACTIVE", found["status"] == "ACTIVE",
              found["status"] + (f": {found['fault']}" if found.get("fault") else "")),
        check(f"{name} is on {' or '.join(expected)}", found["host"] in expected,
              found["host"]),
    ]
