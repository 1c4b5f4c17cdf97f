"""`passthru demo`: a newcomer's first run, from one command."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from passthru.cli.output import command

#: The shell's status for a run stopped by Ctrl-C.
INTERRUPTED = 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@command("demo")
def demo(
    keep: Annotated[bool, typer.Option(
        "--keep", help="Leave the cluster running after the walk-through, print the fleet "
        "page's address, and clean up on Ctrl-C.")] = False,
    listen: Annotated[str | None, typer.Option(
        "--listen", metavar="HOST:PORT", show_default="a free port on 127.0.0.1",
        help="Where the demo's controller listens.")] = None,
    real_vm: Annotated[bool, typer.Option(
        "--real-vm/--no-real-vm", help="Also boot a real VM on this machine's libvirtd and "
        "qemu, where it can run one (root, libvirtd and qemu installed).")] = True,
) -> None:
    """Start a passthru cluster on this machine and walk the seed's use cases on it.

    A real controller (SQLite in a temporary data dir), an agent for this machine's own
    PCI devices, and agents for simulated hosts of real hardware (a 2-NUMA GPU host,
    Intel E810 and Mellanox ConnectX SR-IOV NIC hosts on physnet1 and physnet2, an Intel
    QuickAssist host). Each use case (GPU flavors, wild-card and grouping flavors, SR-IOV
    NICs by PCI flavor and by network, macvtap and whole PFs, encryption cards with
    images, refusals) is played with the printed `passthru` commands, and marked met
    only when the VMs are ACTIVE where they should be with the right devices. Those VMs
    are libvirt test-driver domains: nothing runs and no device leaves this machine.

    Where this machine can run one, a last use case boots a real VM on a private libvirtd
    with the qemu driver (TCG where KVM does not really run guests): an image with a
    kernel, a keypair, a disk, a NIC on a management bridge, its console and power.

    Everything is stopped and removed at the end, on Ctrl-C, or on an error. Exit
    status 0 when every use case was met, 1 otherwise.
    """
    # Loaded here, not for every command.
    from passthru.demo.walkthrough import run_demo

    # Stopped by Ctrl-C, by `kill`, or by a service manager: clean up in every case, even
    # when started as a background job (shells start those with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        every = run_demo(Console(), in_process, listen=listen, keep=keep, real_vm=real_vm)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: the demo cluster was stopped and removed")
        raise typer.Exit(INTERRUPTED) from None
    if not every:
        raise typer.Exit(1)


def in_process(args: list[str]) -> int:
    """Run `passthru ARGS` in this process, as the demo runs the commands it shows: the
    same code as the installed program, without a Python start-up each."""
    from passthru.cli.app import app

    status = app(args=args, prog_name="passthru", standalone_mode=False)
    return status if isinstance(status, int) else 0
