"""Entry point: import every command module so that it registers on the app."""

from __future__ import annotations

import passthru.cli.agent
import passthru.cli.events
import passthru.cli.flavors
import passthru.cli.hosts
import passthru.cli.images
import passthru.cli.keypairs
import passthru.cli.maintenance
import passthru.cli.networks
import passthru.cli.pci_flavors
import passthru.cli.ports
import passthru.cli.serve
import passthru.cli.servers
import passthru.cli.tokens  # noqa: F401
from passthru.cli import demo, discover, sim  # noqa: F401
from passthru.cli.app import app, arrange

arrange()


def main() -> None:
    app()
