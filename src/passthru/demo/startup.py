"""Bring the demo cluster up: the controller, then every host's agent, with a progress
display that follows each host until it has reported its devices and heart-beats."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from passthru.client import Client
from passthru.demo.cluster import Cluster
from passthru.demo.hosts import DemoHost, local_host, simulated_hosts
from passthru.demo.shell import Shell

_HOSTS_TIMEOUT = 60.0


def start_controller(cluster: Cluster, shell: Shell) -> None:
    args = cluster.serve_command()
    shell.echo(tuple(args), note="in the background; SQLite in a temporary data dir")
    cluster.start_controller(args)
    shell.console.print(Padding(f"controller up at {cluster.url}", (0, 0, 0, 2)), style="dim",
                        highlight=False)


def build_hosts(cluster: Cluster, console: Console) -> list[DemoHost]:
    """This machine (when it has PCI devices to offer) and the simulated hosts."""
    local = local_host(cluster.root / "hosts" / "local", cluster.url)
    if local is None:
        console.print("This machine shows no PCI devices to offer (no /sys/bus/pci, or "
                      "bridges only): the demo goes on with simulated hosts only.")
    hosts = simulated_hosts(cluster.root / "hosts", cluster.url)
    return [local, *hosts] if local else hosts


def start_agents(cluster: Cluster, hosts: Sequence[DemoHost], shell: Shell) -> None:
    """One agent process per host, each with its own host token. All processes start
    before the progress display, whose refresh thread must not run while they fork."""
    for host in hosts:
        token = cluster.host_token(host.name)
        shell.echo(("agent", "--config", str(host.config_file)),
                   note=f"{host.name}: {host.summary}")
        cluster.start_agent(host, token)
    shell.console.print(Padding("each agent with its own token from `passthru host-token "
                                "HOST`, given as PASSTHRU_TOKEN", (0, 0, 0, 2)), style="dim")


def _reported(api: Client) -> dict[str, tuple[str, int]]:
    hosts = api.list_all(api.tenant("/os-hosts"), "hosts")
    return {h["name"]: (h["status"], h["devices"]) for h in hosts}


def wait_for_hosts(cluster: Cluster, hosts: Sequence[DemoHost], console: Console) -> None:
    """Until every host is up with all the devices its whitelist offers."""
    columns = (SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
               BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.fields[state]}"))
    deadline = time.monotonic() + _HOSTS_TIMEOUT
    with Client(cluster.url, cluster.admin_token) as api, \
            Progress(*columns, console=console) as progress:
        tasks = {h.name: progress.add_task(f"{h.name:<16}", total=h.offered,
                                           state="starting agent") for h in hosts}
        waiting = {h.name: h for h in hosts}
        while True:
            cluster.check_running()
            seen = _reported(api)
            for name, host in list(waiting.items()):
                status, count = seen.get(name, ("", 0))
                state = ("up: reported, heart-beating" if status == "up"
                         else "reported, no heart-beat yet" if count else "starting agent")
                progress.update(tasks[name], completed=count, state=state)
                if status == "up" and count == host.offered:
                    del waiting[name]
            if not waiting:
                return
            if time.monotonic() > deadline:
                late = cluster.agent(min(waiting))
                raise late.failure(f"did not bring up {', '.join(sorted(waiting))} within "
                                   f"{_HOSTS_TIMEOUT:.0f} s")
            time.sleep(0.2)
