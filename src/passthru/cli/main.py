"""Entry point: import every command module so that it registers on the app."""

from __future__ import annotations

from passthru.cli import discover, sim  # noqa: F401
from passthru.cli.app import app


def main() -> None:
    app()
