"""The `passthru` program. Command modules register themselves on `app`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="passthru",
    help=(
        "Give virtual machines real PCI devices (GPUs, crypto cards, NVMe, SR-IOV VFs) "
        "across a cluster of KVM/libvirt hosts."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
