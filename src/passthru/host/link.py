"""The agent's HTTP link to the controller's agent endpoints: reports, orders, and the
image files its servers boot (streamed to disk, never held in memory)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from passthru.host.agent import StaleReportError
from passthru.host.worker import AnswerRefusedError, ReadOrders, read_orders
from passthru.pci.device import PciDevice
from passthru.pci.errors import PassthruError
from passthru.pci.inventory import InventoryDelta
from passthru.pci.resources import HostResources
from passthru.pci.work import ImagePart, OrderResult, PowerAction, PowerState

_RESULT = TypeAdapter(OrderResult)


class LinkError(PassthruError):
    """The controller refused a report or could not be reached."""


class RefusedError(LinkError, AnswerRefusedError):
    """The controller understood the call and refused it (an HTTP 4xx answer)."""


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

    def _unreachable(self, error: httpx.TransportError) -> LinkError:
        return LinkError(f"cannot reach the controller at {self._http.base_url}: {error}")

    def _refused(self, method: str, path: str, response: httpx.Response) -> LinkError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        refused = RefusedError if response.status_code < 500 else LinkError
        return refused(f"controller refused {method} {path} for host {self.host} "
                       f"({response.status_code}): {message}")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, self._base + path, json=body)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        if response.status_code == 409 and method == "PATCH":
            raise StaleReportError(response.text)
        if response.status_code >= 400:
            raise self._refused(method, path, response)
        return response.json()

    def fetch_image(self, image_id: str, part: ImagePart, dest: Path) -> None:
        """Stream one of an image's files to `dest`; nothing is left there on failure.
        The caller checks it against the order's SHA-256."""
        path = f"/images/{image_id}/file/{ImagePart(part)}"
        try:
            with self._http.stream("GET", self._base + path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused("GET", path, response)
                with dest.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.TransportError as error:
            dest.unlink(missing_ok=True)
            raise self._unreachable(error) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

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

    def orders(self) -> ReadOrders:
        return read_orders(self._call("GET", "/orders"))

    def spawned(self, result: OrderResult) -> None:
        self._call("POST", f"/orders/{result.server_uuid}/spawned",
                   _RESULT.dump_python(result, mode="json"))

    def destroyed(self, result: OrderResult) -> None:
        self._call("POST", f"/orders/{result.server_uuid}/destroyed",
                   _RESULT.dump_python(result, mode="json"))

    def powered(self, result: OrderResult, action: PowerAction) -> None:
        self._call("POST", f"/orders/{result.server_uuid}/powered?action={action}",
                   _RESULT.dump_python(result, mode="json"))

    def lost(self, server_uuid: str, reason: str) -> None:
        self._call("POST", f"/orders/{server_uuid}/lost", {"reason": reason})

    def power_states(self, states: Mapping[str, PowerState]) -> None:
        self._call("POST", "/power-states", {uuid: str(state) for uuid, state in states.items()})

    def console(self, server_uuid: str, text: str) -> None:
        self._call("POST", f"/orders/{server_uuid}/console", {"output": text})
