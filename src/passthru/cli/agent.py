"""`passthru agent`: run on every host; reports its devices and keeps the report current."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from passthru.cli.output import command, err, fail
from passthru.errors import HostError


@command("agent")
def agent(
    config_file: Annotated[Path, typer.Option(
        "--config", "-c", help="Host config (TOML): controller, host, token, source, "
        "pci_information, pool_attrs, interval.")],
    once: Annotated[bool, typer.Option(
        "--once", help="Report the inventory once, heart-beat, and exit (no orders).")
    ] = False,
) -> None:
    """Report this host's PCI devices, CPUs, memory and disk to the controller and keep
    the report current.

    The first report is complete; then every `interval` seconds (with jitter) the host
    is scanned again and only changes are sent: hot-added devices appear, free devices
    that disappear are removed, devices that disappear while in use are kept and flagged
    until their VM frees them. Each round also heart-beats: a host whose agent stops is
    marked down and receives no new VMs. It holds a long-poll of its orders, answered
    as soon as they change (an older controller is asked every `order_interval`
    seconds), and runs the orders of different servers at once: it destroys deleted
    servers (resetting their VFs) and spawns new ones through
    libvirt at `libvirt_uri` (binding ports, configuring VFs, writing the domain XML); a
    failed spawn is undone completely and reported; it stops, starts and reboots
    servers, reports which of them run, and sends the tail of each one's console log
    (INSTANCES_PATH/UUID/console.log). On start it keeps the domains of
    running servers and removes leftovers. A controller that is away (restarting, busy:
    no connection, 502, 503, 504, 429) is waited for: each call is sent again with capped,
    jittered backoff for up to 5 minutes, answers with the same idempotency key so that
    they apply once; a refusal (any other 4xx) is not retried. VFs are configured
    through netlink; a simulated host (`passthru sim`) has no SR-IOV hardware, so with
    `vf_applier = "simulated"` their settings are recorded in SYSFS_ROOT/vf-state.json.
    The token must be this host's agent token (`passthru host-token HOST`), given in the
    config or as PASSTHRU_TOKEN. SIGUSR1 writes the stack of every thread to standard
    error, to see what a stuck agent waits for.
    """
    # The host side (libvirt, netlink, the host config) and logging load for the agent only.
    import logging

    from passthru.host.agent import Agent
    from passthru.host.attach import Attacher, GuestHost, NetlinkVfApplier
    from passthru.host.config import (
        HostConfigError,
        decide,
        load_host_config,
        offered,
        resources,
        scan,
    )
    from passthru.host.libvirt_driver import LibvirtDriver
    from passthru.host.link import connect
    from passthru.host.sim_vf import SimulatedVfApplier
    from passthru.host.worker import OrderWorker

    try:
        config = load_host_config(config_file)
        resources(config)  # a reserved CPU the host does not have is a config error
    except HostConfigError as error:
        fail(error)
    with contextlib.suppress(HostError):  # unreadable devices: each report round says so
        preflight, _ = decide(config)
        if not preflight.iommu:
            err.print(preflight.iommu_line(), style="yellow", highlight=False)
    if not config.token:
        fail(HostConfigError(f"{config_file} gives no token for host {config.host}: add "
                             "token = '...' (from passthru host-token) or set PASSTHRU_TOKEN"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Every orders poll is an HTTP call: logged, they would drown what the agent did.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    link = connect(config.controller, config.host, config.token, stop=stop)
    agent = Agent(scan=lambda: offered(config), link=link,
                  pool_attrs=config.pool_attrs, interval=config.interval,
                  order_interval=config.order_interval, resources=lambda: resources(config))
    try:
        if once:
            agent.report_once()
            err.print(f"reported host {config.host} to {config.controller}")
            return
        with LibvirtDriver(config.libvirt_uri) as driver:
            vf = (SimulatedVfApplier(config.sysfs_root) if config.vf_applier == "simulated"
                  else NetlinkVfApplier())
            attacher = Attacher(driver, vf, config.sysfs_root,
                                host_devices=lambda: scan(config),
                                guests=GuestHost.from_config(config, driver, link.fetch_image))
            agent.worker = OrderWorker(link, attacher, config.instances_path)
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stop.set())
            faulthandler.register(signal.SIGUSR1, all_threads=True)
            agent.run(stop)
    finally:
        link.close()
