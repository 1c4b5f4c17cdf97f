"""Simulated hosts run as real `passthru agent` processes: each has its own sysfs tree,
libvirt node XML (`test:///` URI, so no daemon), host config and agent token.

The sysfs tree can be rebuilt while the agent runs (a device removed or hot-added). The
new tree is written beside the old one and swapped in by replacing one symlink, so the
agent never scans half a tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from passthru.host.sim_vf import read_vf_state, vf_state_path
from passthru.sim import HostProfile, build_sysfs, host_config_toml, nodedev_xml
from tests.support.live import PASSTHRU, Child, child_env

T = TypeVar("T")


class AgentProcess(Child):
    """One simulated host and its `passthru agent` subprocess."""

    def __init__(self, profile: HostProfile, workdir: Path, controller: str, token: str,
                 *, interval: float = 1.0, order_interval: float = 0.3,
                 libvirt_uri: str | None = None) -> None:
        self.name = f"sim-{profile.name}"  # the host name host_config_toml gives it
        self.title = f"agent {self.name}"
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True)
        self.sysfs_root = self.dir / "sys"
        self.sysfs_root.mkdir()
        self._trees = 0
        self.build(profile)
        node = self.dir / "node.xml"
        node.write_text(nodedev_xml(profile))
        # Top-level keys go before host_config_toml's [[pci_information]] tables. Its
        # config records VF settings in <sysfs_root>/vf-state.json instead of sending them
        # by netlink (kept across rebuilds: only `bus` is swapped).
        # `libvirt_uri` (a libvirtd's test driver, say, whose domains outlive the agent)
        # replaces the in-process test driver over the node XML.
        settings: dict[str, object] = {
            "token": token, "interval": interval, "order_interval": order_interval,
            "instances_path": str(self.dir / "instances"), "image_cache": str(self.dir / "images")}
        if libvirt_uri is not None:
            settings["libvirt_uri"] = libvirt_uri
        head = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
        self.config = self.dir / "host.toml"
        self.config.write_text(head + host_config_toml(
            profile, sysfs_root=self.sysfs_root, controller=controller,
            nodedev_xml=node if libvirt_uri is None else None))
        self.log = self.dir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def build(self, profile: HostProfile) -> None:
        """Make the host's sysfs show `profile`'s devices: `<root>/bus`, where discovery and
        VF numbering start, is re-pointed at a freshly built tree in one rename."""
        self._trees += 1
        tree = build_sysfs(profile, self.dir / f"tree-{self._trees}")
        link = self.dir / "bus.new"
        link.symlink_to(os.path.relpath(tree / "bus", self.sysfs_root))
        link.replace(self.sysfs_root / "bus")

    def vf_state(self) -> dict[str, dict[str, Any]]:
        """The VF settings the agent has made, by VF address."""
        return read_vf_state(vf_state_path(self.sysfs_root))

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PASSTHRU), "agent", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=child_env())


class Logged(Protocol):
    def log_tail(self) -> str: ...


def wait_for(what: str, check: Callable[[], T | None], agents: Iterable[Logged] = (),
             timeout: float = 30.0) -> T:
    """Poll `check` until it gives something other than None or False; on timeout, fail
    with `what`, the last answer and the agents' logs."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer is not None and answer is not False:
            return answer
        if time.monotonic() > deadline:
            logs = "\n".join(agent.log_tail() for agent in agents)
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{logs}")
        time.sleep(0.2)
