"""The whole demo: bring the cluster up, walk the use cases, sum up, and clean up."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.markdown import Markdown
from rich.padding import Padding
from rich.rule import Rule
from rich.table import Table

from passthru.client import Client
from passthru.demo.cluster import Cluster, temporary_cluster
from passthru.demo.outcome import Check, check, met
from passthru.demo.real_vm import RealVmHost, real_hypervisor
from passthru.demo.script import UseCase, use_cases
from passthru.demo.shell import Program, Shell, pointed_at
from passthru.demo.startup import build_hosts, start_agents, start_controller, wait_for_hosts
from passthru.demo.walk import Walk
from passthru.errors import PassthruError

MET, NOT_MET = "met", "NOT met"

_INTRO = """\
**passthru demo** starts a real controller and real host agents on this machine, then
walks the use cases of the PCI passthrough / SR-IOV design (the seed wiki) with the
`passthru` CLI. Every command is printed as `$ passthru ...` before it runs.

The hosts: this machine itself (its own PCI devices, read from /sys) and simulated hosts
of real hardware shapes (sysfs trees as `passthru sim` builds them), each with its own
agent process. Their libvirt is libvirt's *test* driver, so those VMs are real libvirt
domains with real device XML, but nothing runs and no device leaves this machine; the
simulated hosts record their VF settings instead of sending them to hardware.

Where this machine has libvirtd and qemu, one more host runs **real VMs**: its libvirt is
a private libvirtd with the qemu driver, and the last use case boots a small Linux guest
there with a disk, a cloud-init seed and a NIC, and reads its console.
"""


@dataclass(frozen=True, slots=True)
class Result:
    case: UseCase
    checks: Sequence[Check]

    @property
    def met(self) -> bool:
        return met(self.checks)


def play(walk: Walk, number: int, case: UseCase) -> Result:
    """Walk one use case and say whether it was met, check by check."""
    console = walk.console
    console.print()
    console.print(Rule(f"[bold]{number}. {case.title}", align="left"))
    walk.say(f"**The seed:** {case.seed}\n\n**Here:** {case.here}")
    try:
        checks = case.play(walk)
    except PassthruError as error:
        checks = [check("every step ran", False, error)]
    console.print()
    for item in checks:
        mark = "[green]✓[/]" if item.passed else "[red]✗[/]"
        # What was seen, unless the expectation already says it.
        seen = f" [dim]({item.seen})[/]" if item.seen not in item.what else ""
        console.print(Padding(f"{mark} {item.what}{seen}", (0, 0, 0, 2)), highlight=False)
    result = Result(case, checks)
    verdict = f"[bold green]{MET}[/]" if result.met else f"[bold red]{NOT_MET}[/]"
    console.print(Padding(f"→ {case.title}: {verdict}", (0, 0, 0, 2)))
    return result


def summary(console: Console, results: Sequence[Result]) -> None:
    table = Table(title="Use cases", title_justify="left", header_style="bold")
    for column in ("#", "Use case", "Result", "Checks"):
        table.add_column(column)
    for number, result in enumerate(results, 1):
        passed = sum(c.passed for c in result.checks)
        table.add_row(str(number), result.case.title,
                      f"[green]{MET}[/]" if result.met else f"[red]{NOT_MET}[/]",
                      f"{passed}/{len(result.checks)}")
    console.print()
    console.print(table)


def _walk(cluster: Cluster, real: RealVmHost | None, console: Console,
          shell: Shell) -> list[Result]:
    hosts = build_hosts(cluster, console)
    if real is not None:
        hosts.append(real.host)
    start_agents(cluster, hosts, shell)
    wait_for_hosts(cluster, hosts, console)
    results = []
    with Client(cluster.url, cluster.admin_token) as api, \
            pointed_at(cluster.url, cluster.admin_token):
        shell.run("host-list", note="every host up, with the devices its whitelist offers")
        walk = Walk(console, shell, api, {h.name: h for h in hosts})
        for number, case in enumerate(use_cases(hosts, real), 1):
            results.append(play(walk, number, case))
            cluster.check_running()
    return results


def _keep_running(cluster: Cluster, console: Console) -> None:
    console.print()
    console.print(f"The cluster keeps running. Fleet page: [bold]{cluster.fleet_page}[/]",
                  soft_wrap=True, highlight=False)
    console.print(f"Try commands against it with PASSTHRU_URL={cluster.url} "
                  f"PASSTHRU_TOKEN=$(cat {cluster.root / 'controller' / 'admin-token'})",
                  soft_wrap=True, highlight=False)
    console.print("Press Ctrl-C to stop it and remove its files.")
    try:
        while True:
            cluster.check_running()
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print()


def run_demo(console: Console, program: Program, listen: str | None = None,
             keep: bool = False, real_vm: bool = True) -> bool:
    """Run the whole demo, its commands through `program`, with a real VM where
    `real_vm` and the machine can run one; True when every use case was met."""
    started = time.monotonic()
    console.print(Markdown(_INTRO))
    shell = Shell(console, program)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(temporary_cluster(listen))
        console.print()
        console.print(Rule("[bold]The cluster", align="left"))
        start_controller(cluster, shell)
        real = (stack.enter_context(real_hypervisor(cluster.root / "real", cluster.url,
                                                    console)) if real_vm else None)
        # On the way out the agents stop before the hypervisor they run VMs on.
        stack.callback(cluster.stop)
        results = _walk(cluster, real, console, shell)
        summary(console, results)
        if keep:
            _keep_running(cluster, console)
        console.print(f"Stopping the agents and the controller, removing {cluster.root}.",
                      highlight=False)
    every = all(r.met for r in results)
    console.print(f"{'Every use case was met' if every else 'Some use cases were NOT met'} "
                  f"({time.monotonic() - started:.0f} s).", highlight=False)
    return every
