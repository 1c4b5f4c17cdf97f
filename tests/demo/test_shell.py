"""Commands as the demo shows them: echoed, run through the passthru program, their output
kept or shown."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console

from passthru.cli.demo import in_process
from passthru.client import TOKEN_ENV, URL_ENV
from passthru.demo.shell import Shell, pointed_at
from passthru.demo.walk import devices_part
from passthru.errors import InvalidInputError


def shell() -> tuple[Shell, io.StringIO]:
    screen = io.StringIO()
    return Shell(Console(file=screen, width=200), in_process), screen


def test_a_quiet_command_is_echoed_and_its_output_kept() -> None:
    demo, screen = shell()

    ran = demo.run("sim", "--list", quiet=True, note="the profiles")

    assert ran.ok and "x710-2x" in ran.output
    assert screen.getvalue() == "$ passthru sim --list   # the profiles\n"


def test_a_failing_quiet_command_shows_why() -> None:
    demo, screen = shell()

    ran = demo.run("sim", "no-such-profile", "--root", "/nonexistent", quiet=True)

    assert (ran.ok, ran.status) == (False, InvalidInputError.exit_code)
    assert "no profile 'no-such-profile'" in ran.output
    assert screen.getvalue().splitlines() == [
        "$ passthru sim no-such-profile --root /nonexistent",
        *ran.output.strip().splitlines()]


def test_arguments_are_echoed_quoted_for_a_shell() -> None:
    demo, screen = shell()
    demo.echo(("flavor-key", "m1", "set", "pci_passthrough:pci_flavor=1:bigGPU;"))
    assert screen.getvalue() == ("$ passthru flavor-key m1 set "
                                 "'pci_passthrough:pci_flavor=1:bigGPU;'\n")


def test_commands_point_at_the_demo_controller_only_while_inside(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, "http://elsewhere:1")
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    with pointed_at("http://127.0.0.1:2", "secret"):
        assert (os.environ[URL_ENV], os.environ[TOKEN_ENV]) == ("http://127.0.0.1:2", "secret")

    assert os.environ[URL_ENV] == "http://elsewhere:1"
    assert TOKEN_ENV not in os.environ


def test_the_domain_xml_is_trimmed_to_its_devices() -> None:
    xml = ("<domain>\n  <name>vm</name>\n  <devices>\n    <hostdev/>\n  </devices>\n"
           "</domain>\n")
    assert devices_part(xml) == "  <devices>\n    <hostdev/>\n  </devices>"
    assert devices_part("<domain/>\n") == "<domain/>"
