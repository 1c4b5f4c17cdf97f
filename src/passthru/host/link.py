"""The agent's HTTP link to the controller's agent endpoints: reports and orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import httpx
from pydantic import TypeAdapter

from passthru.host.agent import StaleReportError
from passthru.pci.device import PciDevice
from passthru.pci.errors import PassthruError
from passthru.pci.inventory import InventoryDelta
from passthru.pci.resources import HostResources
from passthru.pci.work import OrderResult, Orders

_ORDERS = TypeAdapter(Orders)
_RESULT = TypeAdapter(OrderResult)


class LinkError(PassthruError):
    """The controller refused a report or could not be reached."""


def connect(controller: str, host: str, token: str, *, timeout: float = 30.0) -> HttpLink:
    """A link to the controller at `controller` (a URL) for `host`."""
    http = httpx.Client(base_url=controller.rstrip("/"), timeout=timeout,
                        headers={"Authorization": f"Bearer {token}"})
    return HttpLink(http, host)


class HttpLink:
    """Reports for one host over `http`, a client that carries the host's agent token."""

    def __init__(self, http: httpx.Client, host: str) -> None:
        self.host = host
        self._base = f"/v2/agent/hosts/{host}"
        self._http = http

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, self._base + path, json=body)
        except httpx.TransportError as error:
            raise LinkError(f"cannot reach the controller at {self._http.base_url}: "
                            f"{error}") from None
        if response.status_code == 409 and method == "PATCH":
            raise StaleReportError(response.text)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise LinkError(f"controller refused {method} {path} for host {self.host} "
                            f"({response.status_code}): {message}")
        return response.json()

    def report_full(self, devices: Sequence[PciDevice], pool_attrs: Sequence[str],
                    resources: HostResources | None = None) -> int:
        body = {"pool_attrs": list(pool_attrs), "devices": [asdict(d) for d in devices],
                "resources": asdict(resources) if resources is not None else None}
        return int(self._call("PUT", "/inventory", body)["generation"])

    def report_delta(self, delta: InventoryDelta, pool_attrs: Sequence[str],
                     generation: int) -> int:
        body = {"base_generation": generation, "pool_attrs": list(pool_attrs),
                "delta": asdict(delta)}
        return int(self._call("PATCH", "/inventory", body)["generation"])

    def heartbeat(self) -> int:
        return int(self._call("POST", "/heartbeat")["generation"])

    def orders(self) -> Orders:
        return _ORDERS.validate_python(self._call("GET", "/orders"))

    def spawned(self, result: OrderResult) -> None:
        self._call("POST", f"/orders/{result.server_uuid}/spawned",
                   _RESULT.dump_python(result, mode="json"))

    def destroyed(self, result: OrderResult) -> None:
        self._call("POST", f"/orders/{result.server_uuid}/destroyed",
                   _RESULT.dump_python(result, mode="json"))

    def lost(self, server_uuid: str, reason: str) -> None:
        self._call("POST", f"/orders/{server_uuid}/lost", {"reason": reason})
