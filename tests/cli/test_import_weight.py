"""Client commands stay light: what `passthru --help` and a client command import.

Every CLI call pays for what the CLI imports before it sends its request, so the store
(SQLAlchemy, the ORM models, migrations), the web stack and the host side (libvirt,
netlink, XML) load only for the commands that use them (`serve`, `agent`, `discover`,
`sim`, `demo`, `prune`). A command's module loads only when that command runs: the
program's help lists every command from a table, and a client command loads its own
module, not the others'. Typer's validation of option values through pydantic (0.29) is
kept out too. As click's own test suite does, each command runs in a fresh interpreter,
which then lists the modules it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from passthru.cli.app import PANELS
from passthru.errors import UnavailableError

#: Never imported by `passthru --help` or a client command.
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "libvirt", "pyroute2",
         "lxml", "passthru.controller.store.models", "passthru.host", "passthru.sim",
         "passthru.demo", "pydantic", "pydantic_core", "httpx")

#: The modules of passthru.cli that only declare commands (the rest are shared parts:
#: app, options, output, files, assignments, nics, nova_conf).
COMMAND_MODULES = {f"passthru.cli.{module}"
                   for entries in PANELS.values() for module, _ in entries.values()}

#: Runs the CLI as the `passthru` program does, then writes the loaded module names to
#: the file named by argv[1].
_PROBE = """
import atexit, json, sys
modules_file = sys.argv[1]
atexit.register(lambda: open(modules_file, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["passthru", *sys.argv[2:]]
from passthru.cli.main import main
main()
"""

#: Nothing listens on the discard port: the command fails at its first request, once its
#: module set and the HTTP client's are loaded.
_NOWHERE = "http://127.0.0.1:9"


def loaded_by(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                        set[str]]:
    modules_file = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    env |= {"PASSTHRU_RETRY_SECONDS": "0", "PASSTHRU_TOKEN": "not-asked-for",
            "PASSTHRU_URL": _NOWHERE, "COLUMNS": "120"}
    run = subprocess.run([sys.executable, "-c", _PROBE, str(modules_file), *args], env=env,
                         capture_output=True, text=True, timeout=60)
    return run, set(json.loads(modules_file.read_text()))


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(name for name in modules
                  if any(name == heavy or name.startswith(f"{heavy}.") for heavy in HEAVY))


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    run, modules = loaded_by(["--help"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Start here" in run.stdout
    assert heavy_among(modules) == []
    # Each command's one-line help comes from the table, not from its module; rich's
    # Markdown parser and typer's rich help module are not loaded either.
    assert sorted(modules & COMMAND_MODULES) == []
    assert not {"typer.rich_utils", "markdown_it", "rich.markdown"} & modules


@pytest.mark.parametrize(("command", "module"), [
    (["list"], "servers"), (["show", "vm1"], "servers"), (["events"], "events"),
    (["token-list"], "tokens"), (["host-list"], "hosts"), (["pci-flavor-list"], "pci_flavors"),
    (["flavor-list"], "flavors"), (["image-list"], "images"), (["net-list"], "networks"),
    (["port-list"], "ports"), (["keypair-list"], "keypairs"), (["pci-stats"], "hosts"),
])
def test_a_client_command_imports_nothing_heavy(command: list[str], module: str,
                                                tmp_path: Path) -> None:
    run, modules = loaded_by(command, tmp_path)
    # It got as far as its first request.
    assert run.returncode == UnavailableError.exit_code, run.stdout + run.stderr
    assert f"cannot reach the controller at {_NOWHERE}" in run.stderr
    assert heavy_among(modules) == []
    # The token and the address are given: the controller's settings are not read.
    assert not {"passthru.controller.settings", "platformdirs"} & modules
    # Its own module, no other command's.
    assert sorted(modules & COMMAND_MODULES) == [f"passthru.cli.{module}"]
