"""Entry point: the program; each command's module is imported when that command runs
(`passthru.cli.app`)."""

from __future__ import annotations

from passthru.cli.app import app


def main() -> None:
    app()
