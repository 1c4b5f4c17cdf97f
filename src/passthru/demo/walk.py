"""The steps a use case is made of: say what the seed asked for, set up the catalog, boot
and show where each VM landed with its devices, domain XML and VF settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.padding import Padding
from rich.syntax import Syntax
from rich.table import Table

from passthru.client import Client
from passthru.demo.hosts import DemoHost
from passthru.demo.outcome import Check, check, devices, port_devices, server, settled
from passthru.demo.shell import Ran, Shell
from passthru.errors import PassthruError
from passthru.host.sim_vf import read_vf_state

_INDENT = (0, 0, 0, 2)


class StepFailedError(PassthruError):
    """A command a use case depends on failed; the use case cannot be met."""


def devices_part(xml: str) -> str:
    """The `<devices>` element of a domain XML as printed, indentation kept."""
    lines = xml.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "<devices>"), None)
    end = next((i for i, line in enumerate(lines) if line.strip() == "</devices>"), None)
    if start is None or end is None:
        return xml.strip()
    return "\n".join(lines[start:end + 1])


def describe_device(device: Mapping[str, Any]) -> str:
    """`0000:17:00.0 10de:20b5 GA100 [A100 PCIe 80GB], PCI, NUMA 0, e.group=gpu`"""
    numa = "no NUMA node" if device["numa_node"] is None else f"NUMA {device['numa_node']}"
    tags = ", ".join(f"{k}={v}" for k, v in device["tags"].items())
    name = device.get("product_name") or ""
    return ", ".join(part for part in (
        f"{device['address']} {device['vendor_id']}:{device['product_id']} {name}".rstrip(),
        device["dev_type"].removeprefix("type-"), numa, tags) if part)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "-" if value is None else str(value)


@dataclass
class Walk:
    """What the use cases act through: the shell for commands, the API for checking."""

    console: Console
    shell: Shell
    api: Client
    hosts: Mapping[str, DemoHost]

    def host_of(self, profile: str) -> str:
        """The name of the simulated host built from `profile`."""
        return next(h.name for h in self.hosts.values() if h.profile == profile)

    def port(self, port_id: str) -> dict[str, Any]:
        return dict(self.api.call("GET", self.api.tenant(f"/ports/{port_id}"))["port"])

    def network(self, network_id: str) -> dict[str, Any]:
        return dict(self.api.call("GET", self.api.tenant(f"/networks/{network_id}"))["network"])

    def say(self, text: str) -> None:
        self.console.print(Padding(Markdown(text), _INDENT))

    def note(self, text: str) -> None:
        self.console.print(Padding(text, _INDENT), style="dim", highlight=False)

    def catalog(self, *args: str, note: str | None = None) -> None:
        """An admin command that sets something up; its echo of the new entry is not
        shown."""
        ran = self.shell.run(*args, quiet=True, note=note)
        if not ran.ok:
            raise StepFailedError(f"`passthru {' '.join(args)}` failed")

    def run(self, *args: str, quiet: bool = False, note: str | None = None) -> Ran:
        return self.shell.run(*args, quiet=quiet, note=note)

    def boot(self, name: str, *args: str, note: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Boot `name`, wait (up to `timeout` seconds) for its host's agent, and show what
        it got."""
        ran = self.shell.run("boot", name, *args, quiet=True, note=note)
        if not ran.ok:
            raise StepFailedError(f"boot {name} was refused")
        placed = server(self.api, name)
        self.note(f"the scheduler placed {name} on {placed['host']} and claimed its "
                  f"devices; waiting for that host's agent to start it ...")
        found = settled(self.api, name, timeout)
        self.console.print(Padding(
            f"[bold]{name}[/] is [bold]{found['status']}[/] on [bold]{found['host']}[/]"
            + (f": {found['fault']}" if found["fault"] else ""), _INDENT), highlight=False)
        for device in devices(found):
            self.console.print(Padding(f"• {describe_device(device)}", (0, 0, 0, 4)),
                               highlight=False)
        self.shell.run("show", name)
        if found["domain_xml"]:
            self.show_devices_xml(name)
        return found

    def show_devices_xml(self, name: str) -> None:
        ran = self.shell.run("show", name, "--xml", quiet=True,
                             note="the domain XML; shown here: its <devices>")
        self.console.print(Padding(Syntax(devices_part(ran.output), "xml", word_wrap=True,
                                          background_color="default"), _INDENT))

    def vf_settings(self, found: Mapping[str, Any]) -> list[Check]:
        """Show the VF settings the host's agent applied for the server's ports, and check
        them against each port: its MAC and its network's VLAN."""
        host = self.hosts.get(found["host"] or "")
        by_port = port_devices(found)
        ports = [self.port(port_id) for port_id in found["ports"]]
        plugged = [p for p in ports if p["binding:vif_type"] == "hw_veb"]
        if host is None or host.profile is None or not plugged:
            return []
        state = read_vf_state(host.vf_state)
        table = Table(title=f"VF settings {host.name}'s agent applied (a simulated host "
                            f"records them in {host.vf_state.name})",
                      title_justify="left", header_style="bold")
        for column in ("VF", "Through", "MAC", "VLAN", "Spoof check", "Trust"):
            table.add_column(column, no_wrap=column in ("VF", "MAC"))
        checks = []
        for port in plugged:
            address = by_port[port["id"]]["address"]
            applied = state.get(address, {})
            table.add_row(address, f"VF {applied.get('vf', '?')} of {applied.get('pf', '?')}",
                          *(_shown(applied.get(key))
                            for key in ("mac", "vlan", "spoofchk", "trust")))
            vlan = port["binding:profile"].get("vlan") or 0
            checks.append(check(
                f"VF {address} set to its port's MAC {port['mac_address']} and VLAN {vlan}",
                applied.get("mac") == port["mac_address"] and applied.get("vlan") == vlan,
                f"mac {applied.get('mac')}, vlan {applied.get('vlan')}"))
        self.console.print(Padding(table, _INDENT))
        return checks
