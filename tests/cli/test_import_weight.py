"""Client commands stay light: what `passthru --help` and a client command import.

Every CLI call pays for what the CLI imports before it sends its request, so the store
(SQLAlchemy, the ORM models, migrations), the web stack and the host side (libvirt,
netlink, XML) load only for the commands that use them (`serve`, `agent`, `discover`,
`sim`, `demo`, `prune`). As click's own test suite does, each command runs in a fresh
interpreter, which then lists the modules it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Never imported by `passthru --help` or a client command.
HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "libvirt", "pyroute2",
         "lxml", "passthru.controller.models", "passthru.host", "passthru.sim",
         "passthru.demo")

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


@pytest.mark.parametrize("command", [
    ["list"], ["show", "vm1"], ["events"], ["token-list"], ["host-list"],
    ["pci-flavor-list"], ["flavor-list"], ["image-list"], ["net-list"], ["port-list"],
    ["keypair-list"], ["pci-stats"],
])
def test_a_client_command_imports_nothing_heavy(command: list[str], tmp_path: Path) -> None:
    run, modules = loaded_by(command, tmp_path)
    # It got as far as its first request.
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"cannot reach the controller at {_NOWHERE}" in run.stderr
    assert heavy_among(modules) == []
